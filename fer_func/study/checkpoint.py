"""Checkpoints that are either the previous complete file or the new complete file, never half of one.

``save`` writes to a temporary file in the same directory, fsyncs it, then ``os.replace``s it over
the target (atomic on POSIX and Windows within one filesystem) and fsyncs the directory so the
rename itself survives a power cut. An exception or Ctrl-C mid-write removes the temporary file and
leaves the old checkpoint untouched.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def atomic_write(path, data: bytes | None = None, *, writer=None) -> Path:
    """Replace ``path`` atomically with ``data``, or with what ``writer(file)`` writes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if writer is not None:
                writer(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # includes KeyboardInterrupt: never leave a stray temp file behind
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def save(path, payload) -> Path:
    """``torch.save(payload)`` to ``path`` atomically.

    Keep ``payload`` to tensors, numbers, strings and containers of them (``dataclasses.asdict`` a
    config) so :func:`load` can use ``weights_only=True``, which never runs pickled code.
    """
    return atomic_write(path, writer=lambda f: torch.save(payload, f))


def load(path, map_location=None):
    """The payload of a checkpoint written by :func:`save` (tensors onto ``map_location`` if given)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    return torch.load(path, map_location=map_location, weights_only=True)


def _fsync_dir(directory: Path):
    if os.name != "posix":  # Windows cannot open a directory; os.replace is already durable enough there
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
