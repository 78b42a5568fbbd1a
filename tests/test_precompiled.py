"""Programs compiled ahead of time: a later process loads them instead of tracing, and computes the same bits.

Every test points inductor's cache (where the programs are saved) at a directory of its own.
"""
import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from conftest import TINY_POPULATION_SETUP
from fer_func.compile import precompiled
from fer_func.compile import compile_options, compile_program
from fer_func.compile.precompiled import Precompiled

# One process trains a tiny population for two steps and evaluates it, then prints what it loaded,
# how many graphs dynamo traced, and a checksum of every carry tensor.
CHILD = textwrap.dedent("""
    import json
    from torch._dynamo.utils import counters
    from fer_func import tree
""") + TINY_POPULATION_SETUP + textwrap.dedent("""
    pop = Population(variants, data)
    pop.step(pop.epoch_order(0), pop._js[0]); pop.step(pop.epoch_order(0), pop._js[1])
    acc = pop.evaluate("val")["acc"].tolist()
    print(json.dumps({"loaded": [pop._step.loaded, pop._eval.loaded], "graphs": counters["stats"]["unique_graphs"],
                      "carry": [float(t.double().sum()) for t in tree.leaves(pop.carry)], "acc": acc}))
""")


def run_child(cache):
    out = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_programs_and_computes_the_same_bits(tmp_path, aot):
    first = run_child(tmp_path)
    assert first["loaded"] == [0, 0] and first["graphs"] >= 2  # compiled (and traced) here, then saved
    assert len(list((tmp_path / "fer_func_programs").glob("*.bin"))) == 2
    second = run_child(tmp_path)
    assert second["loaded"] == [1, 1] and second["graphs"] == 0  # nothing traced: both came from disk
    assert second["carry"] == first["carry"] and second["acc"] == first["acc"]


def scale_rows(x, w):
    return torch.func.vmap(lambda xi, wi: (xi * wi).sum(-1))(x, w)


@pytest.fixture(scope="module")
def aot():
    """Skips where this torch cannot save a vmapped program ahead of time: torch 2.13's ``aot_compile``
    refuses the guards ``vmap`` installs (compile_program then falls back to compiling in every process,
    which test_without_the_ahead_of_time_path... checks)."""
    x, w = torch.ones(2, 5, 4), torch.ones(2, 4)
    try:
        torch.compile(scale_rows, fullgraph=True, dynamic=False).aot_compile(((x, w), {}))
    except Exception as e:  # noqa: BLE001 - whatever this torch raises, the path is unavailable
        pytest.skip(f"torch {torch.__version__} cannot compile ahead of time: {type(e).__name__}: {e}")


@pytest.fixture
def programs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    return tmp_path / "fer_func_programs"


def test_inputs_of_another_shape_get_a_program_of_their_own(programs_dir, aot):
    fn = compile_program(scale_rows, ("test", "scale_rows"), **compile_options(True))
    assert isinstance(fn, Precompiled)
    for k in (2, 3, 2):  # K=2 again finds its program in memory
        x, w = torch.randn(k, 5, 4), torch.randn(k, 4)
        torch.testing.assert_close(fn(x, w), scale_rows(x, w))
    assert len(fn._programs) == 2 and len(list(programs_dir.glob("*.bin"))) == 2
    again = compile_program(scale_rows, ("test", "scale_rows"), **compile_options(True))  # a new process's view
    x, w = torch.randn(3, 5, 4), torch.randn(3, 4)
    torch.testing.assert_close(again(x, w), scale_rows(x, w))
    assert again.loaded == 1


def test_the_file_name_changes_with_everything_that_decides_the_code(programs_dir, monkeypatch):
    args = (torch.randn(2, 5, 4), torch.randn(2, 4))
    base = Precompiled(scale_rows, {"backend": "inductor"}, "key").path(args)
    assert Precompiled(scale_rows, {"backend": "inductor"}, "other key").path(args) != base
    assert Precompiled(scale_rows, {"backend": "inductor", "options": {"x": 1}}, "key").path(args) != base
    assert Precompiled(scale_rows, {"backend": "inductor"}, "key").path((args[0].double(), args[1])) != base
    assert Precompiled(scale_rows, {"backend": "inductor"}, "key").path((args[0].mT.contiguous().mT, args[1])) != base
    monkeypatch.setattr(precompiled, "_SOURCE", "an edited fer_func")
    assert Precompiled(scale_rows, {"backend": "inductor"}, "key").path(args) != base


def test_a_damaged_file_is_compiled_again_and_replaced(programs_dir, aot):
    x, w = torch.randn(2, 5, 4), torch.randn(2, 4)
    fn = compile_program(scale_rows, ("test", "damaged"), **compile_options(True))
    fn(x, w)
    path = fn.path((x, w))
    path.write_bytes(b"not a program")
    again = compile_program(scale_rows, ("test", "damaged"), **compile_options(True))
    torch.testing.assert_close(again(x, w), scale_rows(x, w))
    assert again.loaded == 0 and path.read_bytes() != b"not a program"


def test_without_the_ahead_of_time_path_the_program_compiles_the_usual_way(programs_dir, monkeypatch):
    def unavailable(self, *args, **kwargs):
        raise NotImplementedError("no aot_compile in this torch")
    monkeypatch.setattr(Precompiled, "_obtain", unavailable)
    fn = compile_program(scale_rows, ("test", "fallback"), **compile_options(True))
    x, w = torch.randn(2, 5, 4), torch.randn(2, 4)
    with pytest.warns(UserWarning, match="ahead-of-time compile unavailable .*no aot_compile"):
        torch.testing.assert_close(fn(x, w), scale_rows(x, w))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning, not one per call
        torch.testing.assert_close(fn(x, w), scale_rows(x, w))
    assert not programs_dir.exists()


def test_naming_a_program_does_not_run_inductors_isa_probe(monkeypatch):
    """The probe compiles a test library per ISA over an empty cache; naming the program's file,
    before the first trace, must not wait for it."""
    from torch._inductor import cpu_vec_isa

    def probe(*args):
        raise AssertionError("inductor's ISA probe ran")
    monkeypatch.setattr(cpu_vec_isa, "pick_vec_isa", probe)
    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", probe)
    env = precompiled.environment()
    assert torch.backends.cpu.get_cpu_capability() in env and precompiled.source_hash() in env
