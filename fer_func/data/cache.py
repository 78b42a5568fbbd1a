"""Decoded-dataset cache: ``.npz`` files in one directory, written atomically, never required.

``cache_dir=None`` means the default (``$FER_FUNC_CACHE`` or ``~/.cache/fer_func``); ``False`` turns
caching off. A failed write only warns: a read-only home directory must not stop a run.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from fer_func.runtime import cache_root


def cache_path(cache_dir, name: str) -> Path | None:
    if cache_dir is False:
        return None
    root = Path(cache_dir) if cache_dir else cache_root()
    return root / name


def read(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:  # a truncated or foreign file: rebuild it
        warnings.warn(f"ignoring unreadable cache file {path} ({e})", stacklevel=3)
        return None


def write(path: Path | None, arrays: dict) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic, so a concurrent reader never sees half a file
    except OSError as e:
        warnings.warn(f"could not write the cache file {path} ({e}); the next load rebuilds it", stacklevel=3)
