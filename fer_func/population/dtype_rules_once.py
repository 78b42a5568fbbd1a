"""Inductor's dtype-propagation handler, set up once instead of once per generated operation.

While inductor writes a kernel it asks, for every operation it emits (~18,000 in the lr step's
C++), which dtype the result has, through ``DtypePropagationOpsHandler()``. That class is a
singleton by ``__new__``, but Python still runs ``__init__`` on every call, and ``__init__`` rebuilds
the handler: a ``setattr`` per dtype rule, then ``dir(self)`` against every op name as a sanity
check. In a cold compile of the lr step that was 4.7 s of its 22.5 s of code generation (cProfile
around ``Scheduler.codegen``; 17,779 calls at 0.26 ms each), for the same answer each time.

:func:`install` wraps ``__init__`` so it rebuilds the handler only when the rule tables it reads
have changed size since the last build (inductor registers rules as its lowerings are imported, so
a table that grew means new rules to set); otherwise the handler built last time is the handler.
The rules, and so the generated code and inductor's cache keys, are unchanged.
"""
from __future__ import annotations

from fer_func.population import inductor_hook


def install() -> bool:
    """Wrap the handler's ``__init__`` once per process; False where this torch has no such handler."""
    try:
        from torch._inductor import utils
        from torch._inductor.codegen import common
        from torch._inductor.dtype_propagation import DtypePropagationOpsHandler
    except ImportError:
        return False
    if not hasattr(utils, "op_dtype_propagation_rules") or not hasattr(common, "pointwise_overrides_data"):
        return False

    def tables() -> tuple[int, int]:
        return len(utils.op_dtype_propagation_rules), len(common.pointwise_overrides_data)

    def once(original):
        built_for = {}  # id(handler) -> the table sizes it was built from

        def __init__(self, *args, **kwargs):
            sizes = tables()
            if built_for.get(id(self)) != sizes:
                original(self, *args, **kwargs)
                built_for[id(self)] = sizes
        return __init__

    return inductor_hook.wrap_once(DtypePropagationOpsHandler, "__init__", once)
