"""Start g++ on each generated CPU kernel as soon as inductor writes it, not after the whole graph.

Inductor's CPU backend writes every kernel of a graph as ``async_compile.cpp_pybinding(...)`` into
the graph's Python wrapper module, and only loading that module (after all code generation)
submits the kernels to its g++ workers. On a cold cache the compile is then two phases in series:
code generation on one core, then g++ on both. Profiling the regularized CNN's K=19 step on this
2-core box: 14.5 s of its 63.8 s cold compile was the final wait for g++.

:func:`install` wraps the wrapper's ``define_kernel`` so each CPU kernel is also submitted the
moment it is defined. The module's own submission later finds the shared library built (inductor's
workers check for it under a file lock), so nothing is compiled twice and the generated code is
unchanged; g++ runs on the second core while the first generates the next kernels. Measured A/B
on the same step: the final wait fell to 4.4 s and the compile to 56.5 s (docs/bench.md). Since
2026-12-04 the submission goes through kernel_batches.py, which builds several kernels per g++ run.
A warm cache never generates code, so it is unaffected.

This reaches into a private inductor class; where that class does not look as expected (another
torch version), :func:`install` leaves inductor alone, which costs only the overlap.
"""
from __future__ import annotations

from fer_func.population import inductor_hook, kernel_batches

_PREFIX = "async_compile.cpp_pybinding("
submitted = 0  # kernels this process submitted early (tests read it)
errors: list[str] = []  # why an early submission failed, the first few (tests read it)


def install() -> bool:
    """Wrap inductor's ``define_kernel`` once per process; False where this torch has no such hook."""
    try:
        from torch._inductor.async_compile import AsyncCompile  # noqa: F401 - kernel_batches submits through it
        from torch._inductor.codegen.wrapper import PythonWrapperCodegen
    except ImportError:
        return False

    def early(original):
        def define_kernel(self, kernel_name, kernel_body, *args, **kwargs):
            if isinstance(kernel_body, str) and kernel_body.lstrip().startswith(_PREFIX):
                global submitted
                try:
                    # The same expression the wrapper module evaluates at load: it queues g++ (several
                    # kernels to a run, kernel_batches.py) and returns a future.
                    eval(kernel_body, {"async_compile": kernel_batches.front()})
                    submitted += 1
                except Exception as e:  # an early start is only an optimisation; the module's load still compiles
                    if len(errors) < 5:
                        errors.append(repr(e))
            return original(self, kernel_name, kernel_body, *args, **kwargs)
        return define_kernel

    return inductor_hook.wrap_once(PythonWrapperCodegen, "define_kernel", early)
