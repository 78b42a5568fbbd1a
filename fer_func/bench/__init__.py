"""Compiled-step benchmarks: the population engine against the standard training loop.

``python runner.py --bench --models simple_cnn --k 1,8 --steps 10 --json bench.json`` times one
training step of K variants per model and implementation (see :mod:`fer_func.bench.impls`), prints
a table, and with ``--json`` writes one row per measurement plus a scaling plot next to it.
How to read it and the measured numbers: docs/bench.md.
"""
from fer_func.bench.main import main, run

__all__ = ["main", "run"]
