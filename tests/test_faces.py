"""runner.py predict on photos: OpenCV's Haar cascade finds real FER2013 faces pasted into larger pictures.

The photos (real FER2013 faces; skipped, with the reason, where the data is absent) and the untrained
model come from conftest.py.
"""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PLACES, background, iou, needs_fer
from fer_func import cli
from fer_func.study.report import CLASSES
from fer_func.use import faces, images, load_model
from fer_func.use.predict import probabilities

cv2 = pytest.importorskip("cv2", reason="face detection needs opencv-python-headless (pip install -e '.[faces]')")


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
