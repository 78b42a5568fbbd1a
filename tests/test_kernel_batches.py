"""Several CPU kernels to one g++ run (population/kernel_batches.py): the same numbers, cold, warm and when a batch fails."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from fer_func.population import kernel_batches

# A child process per compile: an empty cache and temporary directory make it cold, and the
# batcher's counters start at zero. MODE: "batched", "plain" (inductor's one g++ per kernel) or
# "broken" (every batch fails to build, so each kernel is built alone).
CHILD = textwrap.dedent("""
    import hashlib, json, os, torch
    from fer_func.population import early_cpp, isa_probe, kernel_batches
    mode = os.environ["MODE"]
    if mode == "plain":
        from torch._inductor.async_compile import AsyncCompile
        kernel_batches.front = lambda: AsyncCompile()
    if mode == "broken":
        kernel_batches._MODULE = "#error this batch does not build\\n" + kernel_batches._MODULE
    isa_probe.start(); early_cpp.install()

    def chain(x, w):  # a matrix product (ATen's, not generated) between each two kernels
        sums = []
        for i in range(6):
            x = torch.softmax(torch.tanh(x @ w) + i, -1)
            sums.append(x.amax(0))
        return x, torch.stack(sums)

    x, w = torch.linspace(-3, 3, 64 * 33).reshape(64, 33), torch.linspace(-1, 1, 33 * 33).reshape(33, 33)
    got = torch.compile(chain, fullgraph=True)(x, w)
    for a, b in zip(got, chain(x, w)):
        torch.testing.assert_close(a, b)
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in got)).hexdigest()
    cache = {k: v for k, v in torch._dynamo.utils.counters["inductor"].items() if "cache" in k}
    print(json.dumps({"digest": digest, "batches": kernel_batches.built_batches,
                      "batched": kernel_batches.batched_kernels, "kernels": early_cpp.submitted,
                      "errors": early_cpp.errors, "cache": cache}))
""")


def _run(cache: Path, mode: str) -> dict:
    tmp = cache.parent / f"{cache.name}-tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "MODE": mode, "TMPDIR": str(tmp), "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_batched_kernels_compute_what_one_by_one_kernels_compute_cold_and_warm(tmp_path):
    plain = _run(tmp_path / "plain", "plain")
    batched = _run(tmp_path / "batched", "batched")
    assert plain["kernels"] >= 6 and plain["batches"] == 0, plain
    assert batched["batches"] >= 1 and batched["batched"] >= 2, batched
    assert batched["digest"] == plain["digest"]  # the same kernels' code: bit for bit the same results
    # each batched kernel's own library is a hard link of its batch's library, where inductor looks for it
    libraries = list((tmp_path / "batched" / "fer_func_batches").glob("*.so"))
    inodes = {p.stat().st_ino for p in libraries}
    linked = [p for p in (tmp_path / "batched").rglob("*.main.so") if p.stat().st_ino in inodes]
    assert len(libraries) == batched["batches"] and len(linked) == batched["batched"]
    warm = _run(tmp_path / "batched", "batched")  # a new process, the same cache: loads them, builds nothing
    assert warm["kernels"] == 0 and warm["batches"] == 0 and warm["digest"] == plain["digest"]


def test_when_every_batch_fails_to_build_the_program_still_computes_the_same(tmp_path):
    plain = _run(tmp_path / "plain", "plain")
    broken = _run(tmp_path / "broken", "broken")
    assert broken["batches"] == 0 and broken["digest"] == plain["digest"], broken


def test_a_failing_batch_builds_each_kernel_alone_and_releases_whoever_waits(tmp_path):
    built = []
    kernels = []
    for i in range(3):
        source, library = tmp_path / "ab" / f"key{i}.main.cpp", tmp_path / "ab" / f"key{i}.main.so"
        kernels.append(kernel_batches._Kernel(
            ["float*"], 'extern "C" void kernel(float* x) { this is not C++; }', lambda i=i: built.append(i),
            command=f"g++ -x c++ {source} -shared -fPIC -o {library}", target=str(library),
            lock_path=str(tmp_path / f"key{i}.lock")))
    batcher = kernel_batches._Batcher()
    batcher.in_flight = 1  # as _pump leaves it when it hands the batch to a worker
    batcher._run(kernels)
    assert built == [0, 1, 2]  # inductor's own build (worker_fn), once per kernel
    assert all(k.done.is_set() for k in kernels) and batcher.in_flight == 0
    assert not any((tmp_path / "ab" / f"key{i}.main.so").exists() for i in range(3))  # nothing half-linked


def test_a_forked_child_does_not_wait_for_batches_its_parent_was_building(tmp_path):
    # A kernel queued in the parent, whose batch thread does not exist in a forked child: the child's wait
    # returns at once (its load_fn then builds what is missing), and the child gets a batcher of its own.
    kernel = kernel_batches._Kernel(["float*"], 'extern "C" void kernel(float* x) {}', lambda: None,
                                    command="true", target=str(tmp_path / "k.main.so"),
                                    lock_path=str(tmp_path / "k.lock"))
    parent_batcher = kernel_batches._batcher
    with parent_batcher.lock:
        parent_batcher.unfinished.add(kernel)  # as add() leaves it, without starting a build
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without running pytest's exit handlers
            ok = kernel.done.is_set() and kernel_batches._batcher is not parent_batcher
            signal.alarm(30)  # a wait that never returns kills the child, and the status below says so
            kernel.result()  # would wait forever on a batch nobody builds
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        assert os.read(read, 1) == b"1" and status == 0
        assert not kernel.done.is_set()  # the parent's own batcher is untouched
    finally:
        with parent_batcher.lock:
            parent_batcher.unfinished.discard(kernel)
