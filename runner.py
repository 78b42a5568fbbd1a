"""Command-line entry point: ``python runner.py --help``.

Parsing lives in fer_func/study/cli.py (importable and testable); this file makes the one call.
"""
import sys

from fer_func.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
