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

Only the first ISA that builds is probed. Inductor's own list probes every ISA the CPU claims (on a
Zen 4: AVX512-VNNI, AVX512, AVX2: 8.6-10.0 s of g++ over an empty cache), yet with no ``cpp.simdlen``
and no ``ATEN_CPU_CAPABILITY`` it reads only the list's first entry. The claimed ISAs come best first
(AMX, AVX512-VNNI, AVX512, AVX2) and each one's instruction set contains the next one's, so once one
builds and loads the rest would too: :func:`first_valid` probes until one passes (3.6-3.9 s here),
returns it and the claimed ISAs after it, and :func:`start` puts it in place of inductor's
``valid_vec_isa_list``. Where that reasoning does not hold (not x86, a ``simdlen`` or a capability
asked for, the check switched off), inductor's full probe runs, as before.
"""
from __future__ import annotations

import functools
import os
import platform
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
        from torch._inductor import codecache, config, cpp_builder, cpu_vec_isa  # noqa: F401
        probe = _first_valid_in_place(cpu_vec_isa, config) or cpu_vec_isa.valid_vec_isa_list
    except (ImportError, AttributeError):
        return False
    _thread = threading.Thread(target=_run, args=(probe,), name="fer_func-isa-probe", daemon=True)
    _thread.start()
    return True


def first_valid(claimed: list) -> list:
    """``claimed`` (best first) from the first ISA that builds and loads here on; later ones are not probed."""
    for i, isa in enumerate(claimed):
        if isa:  # VecISA.__bool__: inductor's build-and-load check, cached on disk
            return claimed[i:]
    return []


def claimed_isas(cpu_vec_isa) -> list:
    """The ISAs this x86 CPU's flags claim, in inductor's order (as its ``valid_vec_isa_list`` lists them)."""
    flags = cpu_vec_isa.x86_isa_checker()
    return [isa for isa in cpu_vec_isa.supported_vec_isa_list if all(flag in flags for flag in str(isa).split())]


def _first_valid_in_place(cpu_vec_isa, config):
    """Install the first-valid list as inductor's ``valid_vec_isa_list`` where only its first entry is
    read; None (inductor's own probe stays) elsewhere."""
    if (platform.machine() not in ("x86_64", "AMD64") or config.is_fbcode() or config.cpp.simdlen is not None
            or config.cpp.vec_isa_ok is not None or os.getenv("ATEN_CPU_CAPABILITY")):
        return None
    if not (hasattr(cpu_vec_isa, "supported_vec_isa_list") and hasattr(cpu_vec_isa, "x86_isa_checker")):
        return None

    @functools.cache  # as inductor's: asked on every compile
    def valid_vec_isa_list() -> list:
        return first_valid(claimed_isas(cpu_vec_isa))

    cpu_vec_isa.valid_vec_isa_list = valid_vec_isa_list  # pick_vec_isa looks it up by module global
    return valid_vec_isa_list


def _run(probe) -> None:
    try:
        probe()
    except Exception:  # an early start is only an optimisation: inductor's own call probes (and reports) again
        pass


def wait(timeout: float | None = None) -> None:
    """Block until the probe started by :func:`start` is done (tests; a run never needs to)."""
    if _thread is not None:
        _thread.join(timeout)
