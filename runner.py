"""Command-line entry point from a checkout: ``python runner.py --help`` (installed: ``fer-func``).

Everything lives in fer_func/cli.py (importable and testable); this file makes the one call. On
Linux that call first re-executes this command with glibc malloc tuned for training (fer_func/runtime.py;
``FER_FUNC_MALLOC=system`` keeps glibc's defaults).
"""
import sys

if __name__ == "__main__":
    from fer_func.cli import main
    sys.exit(main())
