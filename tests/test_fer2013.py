"""The FER2013 CSV loader: every layout, torchvision agreement, each error alone, skip_bad_rows, the cache."""
import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_func.data import DataError, load
from fer_func.data.fer2013 import load_csv

REAL = Path("/work/shared/data/fer2013/fer2013.csv.gz")
USAGE = ["Training"] * 6 + ["PublicTest"] * 3 + ["PrivateTest"] * 3


def make_rows(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 48, 48), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 7
    return pixels, labels


def px(img) -> str:
    return " ".join(map(str, img.flatten().tolist()))


def write(path, header, rows, gz=False):
    text = header + "\n" + "".join(r + "\n" for r in rows)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def fer_rows(pixels, labels, usage=USAGE):
    return [f"{int(y)},{px(x)},{u}" for x, y, u in zip(pixels, labels, usage)]


def check_same(d, pixels, labels):
    for s, idx in (("train", slice(0, 6)), ("val", slice(6, 9)), ("test", slice(9, 12))):
        assert torch.equal(d.images[s], pixels[idx]) and torch.equal(d.labels[s], labels[idx]), s


def test_every_labeled_layout_reads_the_same(tmp_path):
    pixels, labels = make_rows()
    files = [
        write(tmp_path / "fer2013.csv", "emotion,pixels,Usage", fer_rows(pixels, labels)),
        write(tmp_path / "anything.bin", "emotion,pixels,Usage", fer_rows(pixels, labels), gz=True),  # gzip by magic
        write(tmp_path / "icml_face_data.csv", "emotion, Usage, pixels",
              [f"{int(y)}, {u}, {px(x)}" for x, y, u in zip(pixels, labels, USAGE)]),
        write(tmp_path / "crlf.csv", "emotion,pixels,Usage", [r + "\r" for r in fer_rows(pixels, labels)]),
    ]
    for f in files:
        d = load(f, cache_dir=False)
        check_same(d, pixels, labels)
        assert d.images["train"].dtype == torch.uint8 and d.labels["train"].dtype == torch.int64


def test_directory_is_searched_like_torchvision(tmp_path):
    pixels, labels = make_rows()
    (tmp_path / "fer2013").mkdir()
    write(tmp_path / "fer2013" / "fer2013.csv", "emotion,pixels,Usage", fer_rows(pixels, labels))
    check_same(load(tmp_path, cache_dir=False), pixels, labels)


def test_torchvision_loader_agrees(tmp_path, monkeypatch):
    """torchvision's ``train`` is our train; its ``test`` is our val then test (PublicTest + PrivateTest)."""
    from torchvision.datasets import fer2013 as tv
    monkeypatch.setattr(tv, "check_integrity", lambda *a, **k: True)  # our file is not Kaggle's md5
    pixels, labels = make_rows()
    (tmp_path / "fer2013").mkdir()
    write(tmp_path / "fer2013" / "fer2013.csv", "emotion,pixels,Usage", fer_rows(pixels, labels))
    ours = load(tmp_path / "fer2013" / "fer2013.csv", cache_dir=False)
    for split, (x, y) in (("train", (ours.images["train"], ours.labels["train"])),
                          ("test", (torch.cat([ours.images["val"], ours.images["test"]]),
                                    torch.cat([ours.labels["val"], ours.labels["test"]])))):
        ds = tv.FER2013(tmp_path, split=split)
        assert len(ds) == len(y)
        for i in range(len(ds)):
            img, label = ds[i]
            assert torch.equal(torch.from_numpy(np.array(img)), x[i])
            assert label == y[i]


def test_train_csv_is_split_deterministically(tmp_path):
    pixels, labels = make_rows(40)
    f = write(tmp_path / "train.csv", "emotion,pixels", [f"{int(y)},{px(x)}" for x, y in zip(pixels, labels)])
    a, b, c = load(f, cache_dir=False), load(f, seed=0, cache_dir=False), load(f, seed=1, cache_dir=False)
    assert [len(a.labels[s]) for s in ("train", "val", "test")] == [32, 4, 4]
    together = torch.cat([a.images[s] for s in ("train", "val", "test")])
    assert sorted(map(px, together)) == sorted(map(px, pixels))  # a partition: nothing lost or repeated
    assert all(torch.equal(a.images[s], b.images[s]) for s in ("train", "val", "test"))
    assert not torch.equal(a.labels["val"], c.labels["val"]) or not torch.equal(a.images["val"], c.images["val"])
    assert "seed 0" in a.source


def test_test_csv_is_rejected(tmp_path):
    pixels, _ = make_rows(3)
    f = write(tmp_path / "test.csv", "pixels", [px(x) for x in pixels])
    with pytest.raises(DataError, match=r"test\.csv.*no labels.*fer2013\.csv"):
        load(f, cache_dir=False)


def with_first_pixel(value):
    return lambda y, p, u: (y, f"{value} " + p.split(" ", 1)[1], u)


# (name, how to break row 3 of 12 = file line 5 given (label, pixels, usage), what the message must say)
ERRORS = [
    ("short row", lambda y, p, u: (y, p.rsplit(" ", 1)[0], u), r"line 5: a pixel count other than 2304 .*2303 pixel values"),
    ("non-integer", with_first_pixel("1.5"), r"line 5: non-integer pixel values .*pixel 0 is '1\.5'"),
    ("too large", with_first_pixel("256"), r"line 5: pixel values outside 0\.\.255 .*pixel 0 is 256"),
    ("negative", with_first_pixel("-3"), r"line 5: pixel values outside 0\.\.255 .*pixel 0 is -3"),
    ("label", lambda y, p, u: ("7", p, u), r"line 5: emotion '7' is not a label 0-6"),
    ("label text", lambda y, p, u: ("happy", p, u), r"line 5: emotion 'happy' is not a label"),
    ("usage", lambda y, p, u: (y, p, "Validation"), r"line 5: Usage 'Validation' is not one of Training"),
    ("extra field", lambda y, p, u: (y, p, u + ",x"), r"line 5: more fields than the header's 3"),
]


@pytest.mark.parametrize("name,corrupt,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_each_bad_row_error(tmp_path, name, corrupt, message):
    pixels, labels = make_rows()
    rows = fer_rows(pixels, labels)
    rows[3] = ",".join(corrupt(str(int(labels[3])), px(pixels[3]), USAGE[3]))
    f = write(tmp_path / "bad.csv", "emotion,pixels,Usage", rows)
    with pytest.raises(DataError, match=message) as e:
        load(f, cache_dir=False)
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg and "1 bad row of 12" in msg and "skip_bad_rows=True" in msg
    with pytest.warns(UserWarning, match="skipped 1 bad rows \\(line 5\\)"):
        d = load(f, cache_dir=False, skip_bad_rows=True)
    assert d.skipped_rows == 1 and len(d.labels["train"]) == 5
    keep = [i for i in range(12) if i != 3]
    assert torch.equal(torch.cat([d.images[s] for s in ("train", "val", "test")]), pixels[keep])


def test_many_bad_rows_list_the_first_few_and_the_total(tmp_path):
    pixels, labels = make_rows()
    rows = fer_rows(pixels, labels)
    for i in range(8):
        rows[i] = "9" + rows[i][1:]
    f = write(tmp_path / "bad.csv", "emotion,pixels,Usage", rows)
    with pytest.raises(DataError, match=r"8 bad rows of 12 - lines 2, 3, 4, 5, 6 and 3 more: emotion '9'"):
        load(f, cache_dir=False)
    with pytest.warns(UserWarning, match="skipped 8 bad rows"):
        with pytest.raises(DataError, match="no rows for split train"):  # all 6 Training rows were bad
            load(f, cache_dir=False, skip_bad_rows=True)


@pytest.mark.parametrize("content,message", [
    (None, r"no such file or directory; download fer2013\.csv from https://www\.kaggle\.com/c/challenges-in-representation-"
           r"learning-facial-expression-recognition-challenge/data and pass --data PATH"),
    ("", r"the file is empty"),
    ("emotion,pixels,Usage\n", r"header but no data rows"),
    ("emotion,Usage\n0,Training\n", r"missing column 'pixels' \(header is 'emotion,Usage'\)"),
    ("label,image\n0,1\n", r"missing columns 'emotion', 'pixels'"),
])
def test_file_level_errors(tmp_path, content, message):
    f = tmp_path / "fer.csv"
    if content is not None:
        f.write_text(content)
    with pytest.raises(DataError, match=message) as e:
        load(f, cache_dir=False)
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


def test_cache_hits_and_is_invalidated_by_a_change(tmp_path):
    pixels, labels = make_rows()
    f = write(tmp_path / "fer2013.csv", "emotion,pixels,Usage", fer_rows(pixels, labels))
    cache = tmp_path / "cache"
    check_same(load(f, cache_dir=cache), pixels, labels)
    (npz,) = cache.glob("*.npz")
    check_same(load(f, cache_dir=cache), pixels, labels)      # served from the cache
    os.utime(npz, ns=(1, 1))                                   # the cache file's own time does not matter
    f.write_text(f.read_text().replace("\n0,", "\n3,", 1))     # row 0: Angry -> Happy; new mtime and content
    os.utime(f, ns=(10**18, 10**18))
    assert load(f, cache_dir=cache).labels["train"][0] == 3
    assert len(list(cache.glob("*.npz"))) == 2


def test_limit_train_and_to(tmp_path):
    pixels, labels = make_rows()
    d = load(write(tmp_path / "f.csv", "emotion,pixels,Usage", fer_rows(pixels, labels)), cache_dir=False)
    small = d.limit_train(4)
    assert torch.equal(small.images["train"], pixels[:4]) and torch.equal(small.images["val"], d.images["val"])
    assert d.limit_train(None) is d
    with pytest.raises(DataError, match="limit_train n = 0"):
        d.limit_train(0)
    moved = d.to("meta")
    assert moved.images["train"].device.type == "meta" and moved.labels["test"].dtype == torch.int64


@pytest.mark.skipif(not REAL.is_file(), reason=f"the real FER2013 file is not at {REAL}")
def test_real_file(tmp_path):
    d = load_csv(REAL, cache_dir=tmp_path)
    assert [d.counts(s) for s in ("train", "val", "test")] == [  # SOURCE.md's verified counts
        [3995, 436, 4097, 7215, 4830, 3171, 4965], [467, 56, 496, 895, 653, 415, 607], [491, 55, 528, 879, 594, 416, 626]]
    assert d.images["train"][0, 0, :5].tolist() == [70, 80, 82, 72, 58]
    assert d.labels["train"][:10].tolist() == [0, 0, 2, 4, 6, 2, 4, 3, 3, 2]
    again = load_csv(REAL, cache_dir=tmp_path)
    assert all(torch.equal(d.images[s], again.images[s]) for s in ("train", "val", "test"))


def test_the_command_line_flag_the_error_names_exists(tmp_path, monkeypatch):
    # The bad-row error tells a CLI user which flag drops the rows; that flag must parse and reach the loader.
    import re

    from fer_func import cli
    from fer_func.study.run import _load_data

    monkeypatch.setenv("FER_FUNC_CACHE", str(tmp_path / "cache"))
    pixels, labels = make_rows()
    rows = fer_rows(pixels, labels)
    rows[3] = ",".join(("7", px(pixels[3]), USAGE[3]))
    f = write(tmp_path / "bad.csv", "emotion,pixels,Usage", rows)
    with pytest.raises(DataError) as e:
        load(f, cache_dir=False)
    flag = re.search(r"CLI: (--[a-z-]+)", str(e.value)).group(1)
    options = cli.to_options(cli.build_parser().parse_args(["--experiment", "01", "--data", str(f), flag]))
    with pytest.warns(UserWarning, match="skipped 1 bad rows"):
        assert _load_data(options).skipped_rows == 1
