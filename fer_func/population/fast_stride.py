"""A fast path for the one question inductor's CPU code generation asks most: an index's stride.

For every load and store of every kernel, inductor's C++ backend asks how far an index expression
moves when a loop variable steps by one (``codegen/cpp.py``'s ``stride_at_vec_range``: to choose
tiling, vectorize or transpose). It answers through ``sympy.simplify``, twice: on the index, then on
the difference. In a cold compile of the lr study's step (regularized CNN, K = 12, 2-core CPU) that
was ~9,000 questions and 7.6 s of the 18 s of code generation, all of it on one core. All but 22 of
the 9,002 asked about an index that is a polynomial in the loop variable (other loop variables, and
``FloorDiv``/``ModularIndexing`` of them, are constants as far as this variable goes), where the
stride is ``expand(index(v + 1) - index(v))``: for the 8,872 that are polynomials in every variable,
0.22 s instead of 5.66 s. Every one of the 8,980 answers equalled inductor's (the same sympy number;
checked on that compile, and tests/test_fast_stride.py checks it on a compile of its own).

:func:`polynomial_stride` answers only when the index is a polynomial in the variable and its stride
a number, which is when ``simplify`` has nothing left to choose; everything else (the variable inside
a ``FloorDiv`` or ``ModularIndexing``, a stride that depends on another symbol) goes to inductor's
own function. The generated code is unchanged, so inductor's caches stay valid either way.
"""
from __future__ import annotations

import functools

from fer_func.population import inductor_hook


def polynomial_stride(index, var):
    """``index(var + 1) - index(var)`` where ``index`` is a polynomial in ``var`` and that difference a number;
    else None."""
    import sympy

    if not index.has(var):
        return sympy.S.Zero
    if not index.is_polynomial(var):  # other symbols, and functions of them (FloorDiv(x0, 64)), are constants here
        return None
    step = sympy.expand(index.xreplace({var: var + 1}) - index)
    return step if step.is_Number else None


def install() -> bool:
    """Put the fast path in front of inductor's ``stride_at_vec_range``, once per process; False where
    this torch has no such function."""
    try:
        from torch._inductor.codegen import cpp
    except ImportError:
        return False

    def fast(inductors):
        @functools.lru_cache(maxsize=None)  # as inductor's: the same index is asked about many times
        def stride_at_vec_range(index, var, vec_length=None):
            quick = polynomial_stride(index, var)
            return inductors(index, var, vec_length) if quick is None else quick
        stride_at_vec_range.inductors = inductors
        return stride_at_vec_range

    # cpp.py calls it by its module-level name
    return inductor_hook.wrap_once(cpp, "stride_at_vec_range", fast)
