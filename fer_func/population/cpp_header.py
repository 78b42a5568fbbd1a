"""Inductor's precompiled C++ header, built on a thread beside the first trace that will need it.

Every kernel inductor writes for the CPU starts with ``#include <torch/csrc/inductor/cpp_prefix.h>``,
which pulls in ATen's vector headers. Inductor compiles that header once per machine and flag set
into a 158 MB precompiled header (``.gch``, kept under the temporary directory, not its cache
directory) and each kernel's g++ loads it. Over an empty cache that build, 5.8 s of g++ on this
2-core box, happens on the main thread when the first kernel is compiled, in the middle of code
generation; in every process that compiles a kernel it also preprocesses the header again to check
the build is current (about 1 s).

:func:`start` does it beside the trace instead: on a daemon thread it waits for the ISA probe (the
header's flags name the vector ISA) and compiles a one-line kernel through inductor's own kernel
path, so the header is built, and checked, with exactly the flags the real kernels use; their calls
then find it done. It is started only when a program is about to be compiled (precompiled.py), so a
process that loads its programs ahead of time pays nothing.
"""
from __future__ import annotations

import threading

from fer_func.population import isa_probe

_thread: threading.Thread | None = None

# A kernel as inductor writes them: the same include, and ATen's vector type, so that inductor gives
# it the same vector-ISA flags (and so the same precompiled header) as the kernels to come.
_KERNEL = """
#include <torch/csrc/inductor/cpp_prefix.h>
extern "C" void kernel(float* out)
{
    at::vec::Vectorized<float>(1).store(out);
}
"""


def start() -> bool:
    """Build the header on a daemon thread, once per process; False where this torch has no such path."""
    global _thread
    if _thread is not None:
        return True
    try:
        from torch._inductor.codecache import CppPythonBindingsCodeCache  # imported here, on the caller's thread
        build = CppPythonBindingsCodeCache.load_pybinding
    except (ImportError, AttributeError):
        return False
    _thread = threading.Thread(target=_run, args=(build,), name="fer_func-cpp-header", daemon=True)
    _thread.start()
    return True


def _run(build) -> None:
    isa_probe.wait()
    try:
        build(["float*"], _KERNEL)
    except Exception:  # only an optimisation: inductor builds (and reports) the header itself when it needs it
        pass


def wait(timeout: float | None = None) -> None:
    """Block until the build started by :func:`start` is done (tests; a run never needs to)."""
    if _thread is not None:
        _thread.join(timeout)
