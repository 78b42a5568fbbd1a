"""Small CPU kernels in plain C++, built with the machine's compiler on first use (see threefry.py)."""
