"""What the process runs on and with: the malloc it was started under, the machine, the CPU's features.

Low in the package on purpose: the training loop, the search, Ray workers and the benchmarks all
describe their machine in their results, and the CLI tunes malloc before anything else loads; none
of them should need ``fer_func.bench`` for that. torch is imported only inside :func:`machine`, so
:func:`reexec_tuned` runs before the heavy imports it would otherwise pay twice.

glibc malloc: by default glibc serves allocations above a (dynamic, at most 32 MiB) threshold with
fresh ``mmap`` pages and returns them on ``free``; a training step that frees and re-allocates its
big activations then pays page faults and page zeroing for every one of them, every step, and the
step time swings by up to 10x depending on what the allocator happened to do. ``TUNED`` keeps freed
memory in the heap (no mmap for big blocks, no trimming), so steady-state steps reuse warm pages.
The settings are read once at process start, hence :func:`reexec_tuned`.

:func:`cache_root` is here for the same reason: the dataset cache (fer_func/data/cache.py) and the native
kernels' build (fer_func/native) share one directory, and native sits below data.
"""
from __future__ import annotations

import functools
import os
import platform
import sys
import time
from pathlib import Path

def cache_root() -> Path:
    """The cache directory: ``$FER_FUNC_CACHE``, else ``~/.cache/fer_func`` (decoded datasets, built kernels)."""
    return Path(os.environ.get("FER_FUNC_CACHE") or Path.home() / ".cache" / "fer_func")


TUNED = {"MALLOC_MMAP_THRESHOLD_": str(2**25),   # 32 MiB: the largest value glibc accepts
         "MALLOC_MMAP_MAX_": "0",                # ... and no mmap at all, so bigger tensors stay in the heap too
         "MALLOC_TRIM_THRESHOLD_": str(2**40)}   # never give the heap's top back to the kernel
OPT_OUT = "FER_FUNC_MALLOC"  # set to "system" to keep glibc's defaults (e.g. to measure them)
# The CPU flags that give bf16 matmuls native speed; without them torch emulates bf16 through fp32 (~40x slower).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def describe_malloc() -> str:
    """The malloc settings this process runs with, for the benchmark's output."""
    set_ = {k: os.environ[k] for k in TUNED if k in os.environ}
    return "tuned " + " ".join(f"{k}={v}" for k, v in set_.items()) if set_ else "glibc defaults"


def reexec_tuned(argv: list[str] | None = None):
    """Re-run this command with :data:`TUNED` in the environment, unless it is set already or opted out.

    ``argv`` is what the new interpreter runs after ``sys.executable``: by default ``sys.argv`` (right for
    ``python runner.py ...``, whose argv[0] is the script); ``python -m fer_func`` and the ``fer-func``
    console script pass ``["-m", "fer_func", *args]``, since their argv[0] is not a file python can run
    (a ``__main__.py`` path, or a launcher that may be a binary on Windows). Only glibc reads these
    variables, so elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    if os.environ.get(OPT_OUT) == "system" or all(k in os.environ for k in TUNED):
        return
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in TUNED.items()}}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *(sys.argv if argv is None else argv)], env)


def program() -> str | None:
    """How this process was started, as a user would type it: ``fer-func``, ``python runner.py`` or
    ``python -m fer_func``; None for anything else (pytest, python -c, an embedding)."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main_spec is not None and main_spec.name.startswith("fer_func"):
        return "python -m fer_func"
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return {"runner.py": "python runner.py", "fer-func": "fer-func"}.get(name)


def command() -> str | None:
    """The whole command line of this process for results.json (see :func:`program`)."""
    return " ".join([program(), *sys.argv[1:]]) if program() else None


def machine(device) -> dict:
    """The machine a result was measured on, for results.json and the benchmarks' JSON."""
    import torch

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"host_cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "cpu": platform.processor() or platform.machine(), "gpu": gpu,
            "malloc": describe_malloc(), "date": time.strftime("%Y-%m-%d %H:%M")}


def cpu_flags() -> str:
    """The ``flags`` line of /proc/cpuinfo (a cache key for native code; the CPU's features), else the processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


@functools.cache
def native_bf16() -> bool | None:
    """Whether this CPU has bf16 instructions (True/False), or None where its flags cannot be read (not Linux x86)."""
    line = cpu_flags()
    if not line.startswith("flags"):
        return None
    flags = set(line.split(":", 1)[-1].split())
    return any(f in flags for f in BF16_FLAGS)
