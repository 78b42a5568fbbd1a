"""The process-wide program cache: one compiled program per static structure, built on first use.

    step, evalc = cached(key, lambda: build(...))     # key: everything static the program depends on

Populations, views and folds that differ only in numbers (learning rates, seeds, schedules, batch
sizes with the same micro-batch) ask with equal keys and get the very same compiled program back, so
a new grid of values never recompiles. The cache knows nothing of what it holds: the caller passes
the builder, so this package never imports the population that uses it (compile/ sits below
population/ in the package's layering).
"""
from __future__ import annotations

from typing import Callable, Hashable, TypeVar

T = TypeVar("T")

_PROGRAMS: dict = {}


def cached(key: Hashable, build: Callable[[], T]) -> T:
    """The program cached under ``key``, built by ``build()`` the first time it is asked for."""
    if key not in _PROGRAMS:
        _PROGRAMS[key] = build()
    return _PROGRAMS[key]
