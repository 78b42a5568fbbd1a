"""runner.py predict on photos: OpenCV's Haar cascade finds real FER2013 faces pasted into larger pictures.

Real faces come from the real FER2013 (/work/shared/data/fer2013/fer2013.csv.gz, or $FER2013_CSV); their
tests skip, with the reason, where it is absent. The cascade misses some 48x48 faces even upscaled
(fer_func/use/faces.py gives the rate), so the faces used are chosen, deterministically, as the first rows
that it finds alone at the size and place they are pasted. The model is an untrained network written by
``export.write``: these tests check boxes, crops and per-face output, not accuracy.
"""
import gzip
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_func.config import ModelConfig
from fer_func.models import build_from
from fer_func import cli
from fer_func.study.report import CLASSES
from fer_func.use import export, faces, images, load_model
from fer_func.use.predict import probabilities

cv2 = pytest.importorskip("cv2", reason="face detection needs opencv-python-headless (pip install -e '.[faces]')")

FER = Path(os.environ.get("FER2013_CSV", "/work/shared/data/fer2013/fer2013.csv.gz"))
needs_fer = pytest.mark.skipif(not FER.is_file(), reason=f"the real FER2013 is not at {FER} (set FER2013_CSV)")
# Three faces, off-centre and of different sizes, in a 640x480 picture: (x, y, side).
PLACES = [(40, 60, 120), (250, 250, 160), (470, 40, 140)]


def background(seed=0, size=(480, 640)):
    """A flat mid-grey picture with mild noise: no structure the cascade could take for a face."""
    rng = np.random.default_rng(seed)
    return np.clip(128 + rng.normal(0, 8, size), 0, 255).astype(np.uint8)


def paste(picture, face48, x, y, side):
    picture[y:y + side, x:x + side] = np.asarray(Image.fromarray(face48).resize((side, side), Image.Resampling.BICUBIC))
    return picture


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w, h = min(ax + aw, bx + bw) - max(ax, bx), min(ay + ah, by + bh) - max(ay, by)
    inter = max(w, 0) * max(h, 0)
    return inter / (aw * ah + bw * bh - inter)


def found_alone(face48, place) -> bool:
    boxes = faces.detect(Image.fromarray(paste(background(), face48, *place)))
    return len(boxes) == 1 and iou(boxes[0], place[:2] + (place[2],) * 2) > 0.5


@pytest.fixture(scope="module")
def real_faces():
    """One FER2013 face per PLACES entry: for each place in turn, the next row (in file order) that the
    cascade finds alone there. Reads only the first few hundred rows."""
    chosen, rows = [], []
    with gzip.open(FER, "rt") as f:
        next(f)  # emotion,pixels,Usage
        for line in itertools.islice(f, 400):
            rows.append(np.array(line.split(",")[1].split(), dtype=np.uint8).reshape(48, 48))
    it = iter(range(len(rows)))
    for place in PLACES:
        i = next(i for i in it if found_alone(rows[i], place))
        chosen.append((i, rows[i]))
    return chosen


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained simple_cnn, exported as predict reads any file export writes."""
    cfg = ModelConfig("simple_cnn", {})
    path = tmp_path_factory.mktemp("model") / "untrained.pt2"
    meta = {"tag": export.TAG, "format": "pt2", "classes": list(CLASSES)}
    export.write(path, "pt2", cfg, [build_from(cfg).reference().state_dict()], meta)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory, real_faces):
    """group.png: the three faces at PLACES; empty.png: the same background, no face."""
    folder = tmp_path_factory.mktemp("photos")
    group = background()
    for (_, face), place in zip(real_faces, PLACES):
        paste(group, face, *place)
    Image.fromarray(group).convert("RGB").save(folder / "group.png")  # a colour file, as a camera writes
    Image.fromarray(background()).save(folder / "empty.png")
    return folder


@needs_fer
def test_the_cascade_finds_each_pasted_face_where_it_was_pasted(photos):
    boxes = faces.detect(images.open_gray(photos / "group.png"))
    assert len(boxes) == len(PLACES), boxes
    for box, (x, y, side) in zip(boxes, sorted(PLACES)):  # detect sorts left to right, as PLACES' x
        assert iou(box, (x, y, side, side)) > 0.5, (box, (x, y, side))


@needs_fer
def test_a_face_is_cut_out_framed_as_fer2013(photos, real_faces):
    img = images.open_gray(photos / "group.png")
    for box, (_, face) in zip(faces.detect(img), [real_faces[i] for i in np.argsort([p[0] for p in PLACES])]):
        crop = faces.crop(img, box).astype(float)
        # the cascade frames a face as FER2013 does (MARGIN = 0): the crop is the face, resampled twice
        assert np.abs(crop - face).mean() < 25, np.abs(crop - face).mean()


@needs_fer
def test_predict_json_gives_each_face_its_box_and_probabilities(photos, model_file, tmp_path, capsys):
    annotated = tmp_path / "annotated"
    argv = ["predict", str(model_file), str(photos / "group.png"), str(photos / "empty.png"), "--json",
            "--annotate", str(annotated)]
    assert cli.main(argv) == 0
    group, empty = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert group["image"] == str(photos / "group.png") and empty == {"image": str(photos / "empty.png"), "faces": []}
    img = images.open_gray(photos / "group.png")
    boxes = faces.detect(img)
    assert [f["box"] for f in group["faces"]] == boxes
    want = probabilities(load_model(model_file), torch.from_numpy(np.stack([faces.crop(img, b) for b in boxes])))
    for face, p in zip(group["faces"], want.tolist()):
        assert list(face["probs"]) == list(CLASSES) and face["label"] == max(face["probs"], key=face["probs"].get)
        assert list(face["probs"].values()) == pytest.approx(p, abs=1e-9)
    with Image.open(annotated / "group.png") as drawn, Image.open(photos / "group.png") as src:
        assert drawn.size == src.size and drawn.mode == "RGB"
        assert np.abs(np.asarray(drawn, float) - np.asarray(src.convert("RGB"), float)).max() > 100  # boxes drawn


@needs_fer
def test_predict_text_prints_one_line_per_face(photos, model_file, tmp_path, capsys):
    table = tmp_path / "p.csv"
    assert cli.main(["predict", str(model_file), str(photos), "--csv", str(table)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"{photos / 'empty.png'}  no face found"
    assert len(lines) == 1 + len(PLACES) and all(line.split()[1].startswith("box=") for line in lines[1:])
    rows = table.read_text().strip().splitlines()
    assert rows[0].split(",")[:6] == ["path", "x", "y", "w", "h", "top"] and len(rows) == 1 + 1 + len(PLACES)


def test_a_picture_without_a_face_says_so(model_file, tmp_path, capsys):
    # independent of the real data: noise and a flat grey picture hold no face
    Image.fromarray(background(seed=3)).save(tmp_path / "noise.png")
    Image.fromarray(np.full((300, 400), 90, np.uint8)).save(tmp_path / "flat.jpg")
    assert cli.main(["predict", str(model_file), str(tmp_path / "noise.png"), str(tmp_path / "flat.jpg")]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{tmp_path / 'noise.png'}  no face found",
                                                    f"{tmp_path / 'flat.jpg'}  no face found"]
    assert cli.main(["predict", str(model_file), str(tmp_path / "noise.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"image": str(tmp_path / "noise.png"), "faces": []}


def test_no_detect_is_the_whole_image_path(model_file, tmp_path, capsys):
    face = np.random.default_rng(2).integers(0, 256, (48, 48), dtype=np.uint8)
    Image.fromarray(face).save(tmp_path / "crop.png")
    Image.fromarray(np.zeros((60, 100), np.uint8)).save(tmp_path / "wide.png")
    assert cli.main(["predict", str(model_file), str(tmp_path), "--no-detect", "--json"]) == 0
    crop, wide = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert crop["faces"][0]["box"] == [0, 0, 48, 48] and wide["faces"][0]["box"] == [20, 0, 60, 60]  # centre square
    want = probabilities(load_model(model_file), torch.from_numpy(face)[None])[0].tolist()
    assert list(crop["faces"][0]["probs"].values()) == pytest.approx(want, abs=1e-9)


def test_without_opencv_predict_says_how_to_install_it(model_file, tmp_path, monkeypatch, capsys):
    Image.fromarray(background()).save(tmp_path / "a.png")
    monkeypatch.setattr(faces, "_cascade", None)
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)  # import cv2 now raises ImportError
    assert cli.main(["predict", str(model_file), str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "[faces]" in err and "--no-detect" in err
