"""Helpers that several test files share (the house style keeps them here, not imported across test modules).

Photos with faces: real FER2013 faces (/work/shared/data/fer2013/fer2013.csv.gz, or $FER2013_CSV),
upscaled and pasted into a larger picture; tests that need them skip, with the reason, where the data is
absent. The cascade misses some 48x48 faces even upscaled (fer_func/use/faces.py gives the rate), so the
faces used are chosen, deterministically, as the first rows that it finds alone at the size and place they
are pasted. The model is an untrained network written by ``export.write``: these check boxes, crops and
per-face output, not accuracy. Used by test_faces.py (predict) and test_demo.py (the demo page).
"""
import gzip
import itertools
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
    from fer_func.use import faces

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
    from fer_func.config import ModelConfig
    from fer_func.models import build_from
    from fer_func.study.report import CLASSES
    from fer_func.use import export

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
