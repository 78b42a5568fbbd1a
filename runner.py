"""Command-line entry point: ``python runner.py --help``.

Parsing lives in fer_func/study/cli.py (importable and testable); this file makes the one call.
On Linux it first re-executes itself with glibc malloc tuned for training (big freed tensors stay
in the heap instead of being unmapped and page-faulted back every step, which a population's large
tensors pay for on every step; see docs/bench.md); ``FER_FUNC_MALLOC=system`` keeps glibc's defaults.
"""
import sys

from fer_func.bench.malloc import reexec_tuned

if __name__ == "__main__":
    if sys.platform.startswith("linux"):
        reexec_tuned()
    from fer_func.study.cli import main
    sys.exit(main())
