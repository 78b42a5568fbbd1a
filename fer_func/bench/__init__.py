"""Compiled-step benchmarks: the population engine against the standard training loop.

``python runner.py --bench --models simple_cnn --k 1,8 --steps 10 --json bench.json`` times one
training step of K variants per model and implementation (see :mod:`fer_func.bench.impls`), prints
a table, and with ``--json`` writes one row per measurement plus a scaling plot next to it.
``--bench --e2e NAME`` instead trains a whole study both ways, end to end (:mod:`fer_func.bench.e2e`).
How to read it and the measured numbers: docs/bench.md.
"""


def main(options) -> int:
    """What ``runner.py --bench`` calls (imported lazily, so importing fer_func.bench stays light)."""
    if options.bench.e2e is not None:
        from fer_func.bench.e2e import main as _main
        return _main(options)
    from fer_func.bench.suite import main as _main
    return _main(options)


def run(*args, **kwargs) -> list[dict]:
    """:func:`fer_func.bench.suite.run`: the benchmark without the CLI's options object."""
    from fer_func.bench.suite import run as _run
    return _run(*args, **kwargs)
