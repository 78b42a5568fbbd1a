"""Checkpoints that are either the previous complete file or the new complete file, never half of one.

``save`` writes to a temporary file in the same directory, fsyncs it, then ``os.replace``s it over
the target (atomic on POSIX and Windows within one filesystem) and fsyncs the directory so the
rename itself survives a power cut. An exception or Ctrl-C mid-write removes the temporary file and
leaves the old checkpoint untouched.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import torch

from fer_func import tree


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


class BackgroundSaver:
    """:func:`save` on a thread of its own, so training goes on while a checkpoint is written.

    Each epoch's checkpoint is written while the next epoch trains: for a small, fast model (a 4-variant
    MLP's params, Adam moments and best params: ~86 MB) the write is a sizeable share of an epoch. At most one
    write is in flight: ``save`` first waits for the previous one, so checkpoints land in order and
    every file is still whole (the write is :func:`save`'s). ``wait()`` (and leaving the ``with``
    block, exception or not) returns once the last one is on disk, and re-raises a write's error.

    The payload's tensors are not copied: the training state is functional (every step returns new
    tensors and never writes into the old ones), so a reference taken at the epoch's end keeps that
    epoch's values. Its containers (dicts, lists) are copied, since the population replaces their
    entries as it trains.
    """

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, path, payload) -> None:
        self.wait()
        snapshot = tree.tree_map(lambda x: x, payload)  # new containers, the same leaves

        def write():
            try:
                save(path, snapshot)
            except BaseException as e:  # re-raised in the training thread by wait()
                self._error = e

        self._thread = threading.Thread(target=write, name=f"checkpoint {Path(path).name}", daemon=False)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.wait()
        else:  # the training failed: finish the write, but let the training's exception through
            try:
                self.wait()
            except Exception:
                pass
        return False

