"""Synthetic FER: deterministic from the seed, FER2013 class frequencies, a real but learnable signal."""
import torch

from fer_func.data import load, synthetic
from fer_func.data.samples import main as samples_main
from fer_func.data.samples import sample_grid
from fer_func.data.synthetic import TRAIN_COUNTS, class_counts, generate

SMALL = (300, 70, 70)


def test_deterministic_and_chunk_independent(monkeypatch):
    state = torch.get_rng_state()
    a = generate(3, SMALL)
    assert torch.equal(torch.get_rng_state(), state)  # never touches the global generator
    monkeypatch.setattr(synthetic, "CHUNK", 37)  # rendering is per-sample: chunking cannot matter
    b = generate(3, SMALL)
    for s in ("train", "val", "test"):
        assert torch.equal(a.images[s], b.images[s]) and torch.equal(a.labels[s], b.labels[s])
    c = generate(4, SMALL)
    assert not torch.equal(a.images["train"], c.images["train"])
    assert not torch.equal(a.images["val"], a.images["test"][: len(a.images["val"])])  # splits are distinct draws


def test_shapes_and_class_frequencies():
    assert class_counts(28709) == list(TRAIN_COUNTS)
    for n in (0, 1, 7, 100, 3589):
        counts = class_counts(n)
        assert sum(counts) == n and all(abs(c - n * t / 28709) < 1 for c, t in zip(counts, TRAIN_COUNTS))
    d = generate(0, SMALL)
    for s, n in zip(("train", "val", "test"), SMALL):
        x, y = d.split(s)
        assert x.shape == (n, 48, 48) and x.dtype == torch.uint8 and y.dtype == torch.int64
        assert d.counts(s) == class_counts(n)
    x = d.images["train"].float()
    assert 40 < x.mean() < 200 and x.std(dim=(1, 2)).min() > 5  # faces, not blank frames
    assert d.labels["train"][:20].unique().numel() >= 5  # shuffled, not sorted by class


def test_signal_is_real_but_not_trivial():
    """Nearest class mean on raw pixels: well above chance (the class is in the image), far from
    perfect (nuisances move the features around), and classes differ in difficulty."""
    d = generate(1, (2100, 1400, 0))
    x, y = d.images["train"].float().flatten(1), d.labels["train"]
    xe, ye = d.images["val"].float().flatten(1), d.labels["val"]
    means = torch.stack([x[y == c].mean(0) for c in range(7)])
    pred = torch.cdist(xe, means).argmin(1)
    acc = (pred == ye).float().mean().item()
    per_class = [(pred[ye == c] == c).float().mean().item() for c in range(7)]
    assert 0.2 < acc < 0.6, acc
    assert max(per_class) - min(per_class) > 0.2, per_class


def test_load_caches(tmp_path, monkeypatch):
    calls = []
    real = synthetic.generate
    monkeypatch.setattr(synthetic, "generate", lambda seed: calls.append(seed) or real(seed, SMALL))
    a = load("synthetic", seed=2, cache_dir=tmp_path)
    b = load("synthetic", seed=2, cache_dir=tmp_path)
    assert calls == [2] and len(list(tmp_path.glob("synthetic-*-seed2.npz"))) == 1
    assert all(torch.equal(a.images[s], b.images[s]) and torch.equal(a.labels[s], b.labels[s]) for s in a.images)
    assert "synthetic" in b.source


def test_sample_grid_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    sample_grid(generate(0, (300, 0, 0)), out, per_class=4)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert samples_main(["--data", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "missing.csv: no such file or directory" in capsys.readouterr().err
