"""Inductor's CPU vector-ISA probe, started on a thread before the first compile needs its answer.

Before inductor writes its first C++ kernel in a process it asks which vector ISAs work here
(``cpu_vec_isa.valid_vec_isa_list``): for each one this CPU claims (AMX, AVX512-VNNI, AVX512,
AVX2...) it compiles a test library with g++ and loads it in a child Python. Over an empty cache
that is ~10 s on this 2-core box, in series, in the middle of the first population's cold compile
(a trivial program: 14.7 s cold, of which 9.9 s in the probe). Its results live in inductor's cache
directory, so a warm process pays nothing.

:func:`start` runs the probe on a thread as soon as a CPU population is built (or a study starts).
The probe is subprocesses, so it holds no GIL while they run: it proceeds on the second core while
the main thread traces the step through dynamo and AOT autograd, which takes longer than the probe
and must finish before any kernel is generated. If code generation gets there first, inductor's
own call probes behind ours: every test library is built under a file lock and checked for on
disk, so nothing is built twice. The probe's answer is the same whoever asks first.
"""
from __future__ import annotations

import threading

_thread: threading.Thread | None = None


def start() -> bool:
    """Probe on a daemon thread, once per process; False where this torch has no such probe."""
    global _thread
    if _thread is not None:
        return True
    try:
        # Imported on the calling thread: two threads importing one package's modules at once can
        # see each other's half-initialised modules.
        from torch._inductor import codecache, cpp_builder, cpu_vec_isa  # noqa: F401
        probe = cpu_vec_isa.valid_vec_isa_list
    except (ImportError, AttributeError):
        return False
    _thread = threading.Thread(target=_run, args=(probe,), name="fer_func-isa-probe", daemon=True)
    _thread.start()
    return True


def _run(probe) -> None:
    try:
        probe()
    except Exception:  # an early start is only an optimisation: inductor's own call probes (and reports) again
        pass


def wait(timeout: float | None = None) -> None:
    """Block until the probe started by :func:`start` is done (tests; a run never needs to)."""
    if _thread is not None:
        _thread.join(timeout)
