"""``python -m fer_func``: the same command line as ``fer-func`` and ``python runner.py`` (fer_func/cli.py)."""
import sys

from fer_func.cli import main

if __name__ == "__main__":
    sys.exit(main())
