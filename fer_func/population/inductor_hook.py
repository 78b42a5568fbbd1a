"""Wrapping one of inductor's functions, once per process, where this torch has it.

early_cpp.py and fast_stride.py each put a function of ours in front of one of inductor's private
functions. Both need the same care: leave torch alone where the function is missing (another
version), and never wrap a wrapper, however many populations a process builds.
"""
from __future__ import annotations

_MARK = "fer_func_wrapped"


def wrap_once(owner, name: str, make) -> bool:
    """Replace ``owner.name`` with ``make(original)``, once; False where ``owner`` has no such attribute."""
    original = getattr(owner, name, None)
    if original is None:
        return False
    if getattr(original, _MARK, False):
        return True
    wrapper = make(original)
    setattr(wrapper, _MARK, True)
    setattr(owner, name, wrapper)
    return True
