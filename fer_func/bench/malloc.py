"""glibc malloc settings for CPU benchmarks (and CPU training).

By default glibc serves allocations above a (dynamic, at most 32 MiB) threshold with fresh ``mmap``
pages and returns them on ``free``: a training step that frees and re-allocates its big activations
then pays page faults and page zeroing for every one of them, every step, and the step time swings
by a large factor depending on what the allocator happened to do. ``TUNED`` keeps freed memory in the
heap (no mmap for big blocks, no trimming), so steady-state steps reuse warm pages. The settings are
read once at process start, hence :func:`reexec`.
"""
from __future__ import annotations

import os
import sys

TUNED = {"MALLOC_MMAP_THRESHOLD_": str(2**25),   # 32 MiB: the largest value glibc accepts
         "MALLOC_MMAP_MAX_": "0",                # ... and no mmap at all, so bigger tensors stay in the heap too
         "MALLOC_TRIM_THRESHOLD_": str(2**40)}   # never give the heap's top back to the kernel
OPT_OUT = "FER_FUNC_MALLOC"  # set to "system" to keep glibc's defaults (e.g. to measure them)


def describe() -> str:
    """The malloc settings this process runs with, for the benchmark's output."""
    set_ = {k: os.environ[k] for k in TUNED if k in os.environ}
    return "tuned " + " ".join(f"{k}={v}" for k, v in set_.items()) if set_ else "glibc defaults"


def reexec_tuned():
    """Re-run this command with :data:`TUNED` in the environment, unless it is set already or opted out."""
    if os.environ.get(OPT_OUT) == "system" or all(k in os.environ for k in TUNED):
        return
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in TUNED.items()}}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
