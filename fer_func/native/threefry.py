"""The Threefry cipher as a native CPU kernel: ``blocks(rows, n, offset)``, or None where it cannot be built.

Inside a compiled population step the cipher runs as an opaque op (``prng.blocks_op``). Compiled by
inductor, its ~160 integer ops per block hold each 32-bit word in an int64 (torch has no full uint32
arithmetic) and rotate with two shifts, a mask and an or, a visible share of a profiled step.
``threefry.cpp`` is the same cipher in uint32 lanes with a native rotate, bit-identical
(tests/test_prng.py), several times faster, and needs no compile by inductor either (that program was
a fixed cost of every cold process).

The library is built once per machine with the C++ compiler inductor uses anyway (``$CXX``, else
``g++``) into ``$FER_FUNC_CACHE`` (default ``~/.cache/fer_func``), keyed by the source, the flags and
the CPU's flags, and loaded with ctypes, which releases the GIL for the call. Where no compiler works
the torch version runs instead, after one warning line.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

from fer_func.runtime import cache_root, cpu_flags

_SOURCE = Path(__file__).with_name("threefry.cpp")
_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-std=c++17", "-shared", "-fPIC", "-pthread"]
_lib = None
_tried = False


def _build() -> Path:
    compiler = os.environ.get("CXX", "g++")
    ident = hashlib.sha1("\n".join([_SOURCE.read_text(), compiler, *_FLAGS, platform.machine(), cpu_flags()]).encode())
    lib = cache_root() / f"native/threefry-{ident.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    root = lib.parent
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:  # built aside, then renamed: concurrent builders are safe
        out = Path(tmp) / lib.name
        subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", str(out)], check=True, capture_output=True, text=True)
        os.replace(out, lib)
    return lib


def library():
    """The loaded kernel, built on first use; None where it cannot be (then the torch cipher runs)."""
    global _lib, _tried
    if not _tried:
        _tried = True
        try:
            lib = ctypes.CDLL(str(_build()))
            fn = lib.fer_threefry_blocks
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                           ctypes.c_int64]
            fn.restype = None
            _lib = fn
        except (OSError, subprocess.CalledProcessError) as e:
            detail = e.stderr.strip().splitlines()[-1] if isinstance(e, subprocess.CalledProcessError) and e.stderr else e
            warnings.warn(f"fer_func: the native Threefry kernel could not be built ({detail}); using the torch "
                          f"cipher, which is slower on CPU. Set CXX to a working C++ compiler to fix this.")
    return _lib


def blocks(rows: torch.Tensor, n: int, offset: torch.Tensor, threads: int | None = None) -> torch.Tensor | None:
    """Threefry of counters ``(0, offset[b] + i)``, ``i < n``, under each row's key: ``(B, 2)``, ``(B,)`` ->
    ``(B, n, 2)`` int64 words; None where the native kernel is unavailable or the tensors are not on the CPU."""
    fn = library() if rows.device.type == "cpu" else None
    if fn is None:
        return None
    rows = rows.to(torch.int64).contiguous()
    offset = offset.to(torch.int64).contiguous()
    out = torch.empty((rows.shape[0], n, 2), dtype=torch.int64)
    fn(rows.data_ptr(), offset.data_ptr(), rows.shape[0], n, out.data_ptr(), threads or torch.get_num_threads())
    return out
