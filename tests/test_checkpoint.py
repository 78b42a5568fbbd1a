"""Checkpoints: exact round trip, and an interrupted write never leaves a corrupt or half-written file."""
import os

import pytest
import torch

from fer_func.study import checkpoint


def payload(scale):
    g = torch.Generator().manual_seed(scale)
    return {"params": {"fc.weight": torch.randn(64, 32, generator=g, dtype=torch.float64) * scale,
                       "fc.bias": torch.arange(7)},
            "opt": {"count": torch.tensor(scale), "mu": [torch.ones(3) * scale]},
            "epoch": scale, "ids": ["a-s0", "b-s1"], "lr": 1e-3}


def assert_payload(got, scale):
    want = payload(scale)
    torch.testing.assert_close(got["params"], want["params"], rtol=0, atol=0)
    torch.testing.assert_close(got["opt"], want["opt"], rtol=0, atol=0)
    assert (got["epoch"], got["ids"], got["lr"]) == (scale, ["a-s0", "b-s1"], 1e-3)
    assert got["params"]["fc.weight"].dtype == torch.float64


def test_round_trip(tmp_path):
    path = checkpoint.save(tmp_path / "sub" / "ckpt.pt", payload(3))
    assert path == tmp_path / "sub" / "ckpt.pt"
    assert_payload(checkpoint.load(path), 3)
    assert_payload(checkpoint.load(path, map_location="cpu"), 3)
    checkpoint.save(path, payload(4))  # replacing an existing checkpoint
    assert_payload(checkpoint.load(path), 4)
    assert os.listdir(tmp_path / "sub") == ["ckpt.pt"]


class Bomb:
    """Raises while being pickled: torch.save has already written part of the archive by then."""

    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


@pytest.mark.parametrize("interrupt", ["pickle", "keyboard", "before_rename"])
def test_interrupted_write_keeps_old_checkpoint(tmp_path, monkeypatch, interrupt):
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, payload(1))
    before = path.read_bytes()
    if interrupt == "pickle":
        bad, error = {"params": payload(2)["params"], "tail": Bomb()}, RuntimeError
    elif interrupt == "keyboard":  # Ctrl-C after some bytes are out
        def writer(f):
            f.write(b"PK\x03\x04 half a zip")
            raise KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            checkpoint.atomic_write(path, writer=writer)
        bad = None
    else:  # the whole file is written but the process dies before the rename
        def crash(src, dst):
            assert os.path.getsize(src) > 0
            raise OSError("killed before rename")
        monkeypatch.setattr(checkpoint.os, "replace", crash)
        bad, error = payload(2), OSError
    if bad is not None:
        with pytest.raises(error):
            checkpoint.save(path, bad)
    assert path.read_bytes() == before
    assert_payload(checkpoint.load(path), 1)
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


def test_load_refuses_code_and_missing_files(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Bomb.__new__(Bomb).__class__}, path)  # a pickled class reference, not plain data
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        checkpoint.load(path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        checkpoint.load(tmp_path / "nope.pt")


def test_background_saver_writes_the_state_as_it_was_when_saved(tmp_path):
    """The trainer replaces the payload's entries right after saving; the file still holds the saved epoch."""
    path = tmp_path / "ckpt.pt"
    with checkpoint.BackgroundSaver() as saver:
        for scale in (1, 2, 3):
            state = payload(scale)
            saver.save(path, state)
            state["params"]["fc.weight"] = torch.zeros(1)  # what the next epoch does to the live state
            state["opt"]["mu"].append(torch.zeros(1))
            state["epoch"] = -1
    assert_payload(checkpoint.load(path), 3)  # the last one, whole; the with block waited for it
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_background_saver_reports_a_failed_write_and_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    saver = checkpoint.BackgroundSaver()
    saver.save(path, payload(1))
    saver.save(path, {**payload(2), "bad": Bomb()})  # waits for the first, then fails on its thread
    with pytest.raises(RuntimeError, match="disk full"):
        saver.wait()
    saver.wait()  # reported once
    assert_payload(checkpoint.load(path), 1)
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    # A training error wins over a write error, and the write is still finished first.
    with pytest.raises(ValueError, match="training failed"):
        with checkpoint.BackgroundSaver() as saver:
            saver.save(path, payload(4))
            raise ValueError("training failed")
    assert_payload(checkpoint.load(path), 4)
