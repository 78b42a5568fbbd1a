"""The benchmark runs end to end on a tiny config and writes well-formed rows (no timing assertions)."""
import json

import pytest
import torch

from fer_func.bench import impls, report, run

FIELDS = {"model", "k", "batch", "device", "impl", "compile_s", "step_s", "variant_samples_per_s", "peak_mem_mb",
          "speedup", "recompiles", "threads"}


def test_tiny_bench_writes_json_and_plot(tmp_path):
    path = tmp_path / "bench.json"
    lines = []
    rows = run(models=("mlp",), ks=(1, 2), batch=8, steps=2, warmup=0, device="cpu",
               impl_names=("sequential", "population_eager"), json_path=path, echo=lines.append)
    assert len(rows) == 4 and any(line.startswith("mlp") for line in lines)
    doc = json.loads(path.read_text())
    assert doc["meta"]["threads"] == torch.get_num_threads() and doc["meta"]["torch"] == torch.__version__
    assert doc["meta"]["peak_gmacs"] > 0 and "float32 matmul peak" in lines[0]
    for row in doc["rows"]:
        assert FIELDS <= set(row), FIELDS - set(row)
        assert row["step_s"] > 0 and row["compile_s"] > 0 and row["recompiles"] == 0
        assert row["variant_samples_per_s"] == pytest.approx(row["k"] * row["batch"] / row["step_s"])
        assert len(row["step_s_all"]) == 2 and row["interleaved"] is True
    seq = {r["k"]: r for r in doc["rows"] if r["impl"] == "sequential"}
    assert all(seq[r["k"]]["speedup"] == pytest.approx(1.0) for r in doc["rows"] if r["impl"] == "sequential")
    assert path.with_suffix(".png").stat().st_size > 0


def test_implementations_read_the_same_batches():
    # The sequential baseline draws its data order itself; it must be the population's, or the race is unfair.
    from fer_func.data.synthetic import generate
    from fer_func.population import Population

    setup = impls.Setup(model="mlp", k=2, batch=8, data=generate(seed=0, sizes=(32, 4, 4)), device=torch.device("cpu"))
    pop = Population(setup.variants(), setup.data, compile=False)
    assert torch.equal(setup.perm, pop.epoch_order(0))


def test_unknown_impl_is_named():
    with pytest.raises(ValueError, match="impl = 'fast'"):
        impls.build("fast", None)


def test_saturation_picks_the_first_k_within_ten_percent():
    rows = [{"model": "m", "impl": "population", "k": k, "variant_samples_per_s": t}
            for k, t in [(1, 100), (2, 180), (4, 300), (8, 320)]]
    assert report.saturation(rows) == {"m": 4}


def test_interleaved_timing_rotates_the_order_and_keeps_each_implementations_own_steps():
    from fer_func.bench.measure import time_interleaved
    calls = []

    def build(name):
        calls.append((name, "build"))
        return lambda j: calls.append((name, j))

    out = time_interleaved({n: (lambda n=n: build(n)) for n in "abc"}, torch.device("cpu"), steps=3, warmup=1)
    # each is built, compiled (step 0) and warmed (step 1) in turn, then the timed rounds rotate
    assert calls[:9] == [(n, s) for n in "abc" for s in ("build", 0, 1)]
    assert calls[9:] == [("a", 2), ("b", 2), ("c", 2), ("b", 3), ("c", 3), ("a", 3), ("c", 4), ("a", 4), ("b", 4)]
    assert set(out) == set("abc") and all(len(r["step_s_all"]) == 3 and r["recompiles"] == 0 for r in out.values())
