"""Inductor's precompiled header is built beside the trace (population/cpp_header.py), and is the one kernels use."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

from fer_func.population import cpp_header
from fer_func.population.compiled import compile_options, compile_program


def scale_rows(x, w):
    return torch.func.vmap(lambda xi, wi: (xi * wi).sum(-1))(x, w)


def test_the_header_is_built_only_when_a_program_is_compiled(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    starts = []
    monkeypatch.setattr(cpp_header, "start", lambda: starts.append(1) or True)
    x, w = torch.randn(2, 5, 4), torch.randn(2, 4)
    compiled = compile_program(scale_rows, ("test", "cpp_header"), **compile_options(True))
    torch.testing.assert_close(compiled(x, w), scale_rows(x, w))
    assert starts == [1]  # compiled here: the header is started beside the trace
    loaded = compile_program(scale_rows, ("test", "cpp_header"), **compile_options(True))
    torch.testing.assert_close(loaded(x, w), scale_rows(x, w))
    assert loaded.loaded == 1 and starts == [1]  # loaded from disk: nothing to build


CHILD = textwrap.dedent("""
    import glob, json, os, tempfile, torch
    from fer_func.population import cpp_header, isa_probe
    isa_probe.start(); cpp_header.start(); cpp_header.wait(timeout=300)
    pattern = os.path.join(tempfile.gettempdir(), "torchinductor_*", "precompiled_headers", "*.gch")
    before = sorted(glob.glob(pattern))
    f = torch.compile(lambda x: (x.exp() * 2).sum(1), fullgraph=True)
    x = torch.randn(64, 33)
    ok = torch.allclose(f(x), (x.exp() * 2).sum(1))
    print(json.dumps({"before": before, "after": sorted(glob.glob(pattern)), "ok": ok}))
""")


def test_the_header_built_ahead_is_the_one_the_kernels_load(tmp_path):
    """Over an empty temporary directory the warm-up builds one header; compiling a vectorized kernel
    afterwards adds none, i.e. the kernel's flags found the header built ahead."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["ok"] and len(seen["before"]) == 1
    assert seen["after"] == seen["before"]
