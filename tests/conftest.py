"""What several test modules share, in one place: test modules import these from here (``from conftest import
...``), never from one another, so each test module stands on its own.

- :func:`random_data`: a tiny FERData of random uint8 images, for the population tests;
- ``SMALL_CNN``, ``SMALL_BN``, ``BASE``, ``OPTIMIZERS``, ``SCHEDULES`` and :func:`mixed_variants`: the small
  variants the population equivalence tests train (one optimizer rule and schedule per variant);
- :func:`warm`: compile a population's step and evaluation before a test times or trains it;
- :func:`tiny_fer2013`: a FER2013-format CSV (the real ``emotion,pixels,Usage`` layout) of a few hundred images;
- ``QUICK`` and ``TINY``: the flags and the experiments file of a one-epoch study on that CSV;
- ``SEARCH_EXPERIMENT`` and :func:`search_experiments_file`: a tiny MLP with a ``[search]`` table.
- photos with faces (``FER``, ``needs_fer``, ``PLACES``, :func:`background`, :func:`paste`, :func:`iou`, the
  ``real_faces``, ``model_file`` and ``photos`` fixtures): real FER2013 faces, upscaled and pasted into a larger
  picture, for predict's face detection and the demo page. The cascade misses some 48x48 faces even upscaled
  (fer_func/use/faces.py gives the rate), so the faces used are the first rows it finds alone at the size and
  place they are pasted; the model is an untrained network written by ``export.write``.
"""
import gzip
import itertools
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_func import tree
from fer_func.config import ModelConfig, OptimizerConfig, ScheduleConfig, VariantConfig
from fer_func.data.dataset import FERData


# --- populations on random data ----------------------------------------------------------------

def random_data(n_train=96, n_eval=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    def split(n):
        return torch.randint(0, 256, (n, 48, 48), dtype=torch.uint8, generator=g), torch.randint(0, 7, (n,), generator=g)
    (tx, ty), (vx, vy), (sx, sy) = split(n_train), split(n_eval), split(n_eval)
    return FERData(images={"train": tx, "val": vx, "test": sx}, labels={"train": ty, "val": vy, "test": sy},
                   source="random")


SMALL_CNN = ModelConfig("simple_cnn", {"channels": [3, 4], "fc": [8]})
SMALL_BN = ModelConfig("regularized_cnn", {"channels": [3, 4], "convs_per_block": 1, "fc": [8],
                                          "dropout_conv": 0.0, "dropout_fc": 0.0})
BASE = VariantConfig(model=SMALL_CNN, epochs=2, batch_size=16)
OPTIMIZERS = [OptimizerConfig("sgd", lr=0.05, momentum=0.9, weight_decay=1e-3),
              OptimizerConfig("adam", lr=3e-3, weight_decay=1e-3),
              OptimizerConfig("rmsprop", lr=1e-3, momentum=0.5),
              OptimizerConfig("adamw", lr=2e-3, weight_decay=1e-2)]
SCHEDULES = [ScheduleConfig("constant"), ScheduleConfig("cosine"), ScheduleConfig("plateau", patience=0),
             ScheduleConfig("cosine", unit="step")]


def mixed_variants(model=SMALL_CNN):
    return [BASE.replace(model=model, optimizer=o, schedule=s, seed=i % 2)
            for i, (o, s) in enumerate(zip(OPTIMIZERS, SCHEDULES))]


def warm(pop):
    """Compile the step and the evaluation on a throwaway copy of the state; training then starts clean."""
    saved = tree.clone(pop.carry)
    pop.step(pop.epoch_order(0), pop._js[0])
    pop.carry = saved
    pop.evaluate("val")


# --- runs through the CLI on a tiny FER2013-format CSV ---------------------------------------------

def tiny_fer2013(path, sizes=(("Training", 256), ("PublicTest", 64), ("PrivateTest", 64))):
    # the real emotion,pixels,Usage layout; small val/test splits keep the run's evaluations cheap
    rng = np.random.default_rng(0)
    lines = ["emotion,pixels,Usage"]
    for usage, n in sizes:
        for _ in range(n):
            lines.append(f"{rng.integers(0, 7)},{' '.join(map(str, rng.integers(0, 256, 2304)))},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


# For tests that need a fresh process: script lines that build a tiny random FER split (``data``) and two
# regularized-CNN variants that differ in seed (``variants``); the child script goes on from there.
TINY_POPULATION_SETUP = textwrap.dedent("""
    import torch
    from fer_func.config import ModelConfig, OptimizerConfig, VariantConfig
    from fer_func.data.dataset import FERData
    from fer_func.population import Population
    g = torch.Generator().manual_seed(0)
    split = lambda n: (torch.randint(0, 256, (n, 48, 48), dtype=torch.uint8, generator=g), torch.randint(0, 7, (n,), generator=g))
    (tx, ty), (vx, vy), (sx, sy) = split(64), split(24), split(24)
    data = FERData(images={"train": tx, "val": vx, "test": sx}, labels={"train": ty, "val": vy, "test": sy}, source="random")
    model = ModelConfig("regularized_cnn", {"channels": [2, 3], "convs_per_block": 1, "fc": [4], "dropout_conv": 0.2, "dropout_fc": 0.5})
    variants = [VariantConfig(model=model, epochs=1, batch_size=16, seed=s, optimizer=OptimizerConfig("adam", lr=1e-3)) for s in range(2)]
""")


QUICK = ["--no-compile", "--dtype", "float64", "--wandb", "disabled", "--epochs", "1", "--device", "cpu"]
TINY = """
[experiments.tiny]
id = "01"
description = "a tiny MLP, three learning rates"
model = { name = "mlp", knobs = { hidden = [16], dropout = 0.0 } }
optimizer = { name = "adam", lr = 1e-3 }
schedule = { name = "constant" }
augment = { enabled = false }
batch_size = 32
epochs = 1
seed = 0
class_weighted = false
ensemble = "top:2"
tta = "flip"

[experiments.tiny.grid]
optimizer.lr = [0.03, 0.01, 0.001]
"""

SEARCH_EXPERIMENT = """
[experiments.tiny]
id = "01"
description = "a small MLP to search"
model = { name = "mlp", knobs = { hidden = [32], dropout = 0.2 } }
optimizer = { name = "adam", lr = 1e-3 }
schedule = { name = "cosine" }
augment = { enabled = false }
batch_size = 32
epochs = 3
seed = 0
class_weighted = false

[experiments.tiny.search]
pruner = "successive_halving"
reduction_factor = 2
optimizer.lr = { loguniform = [1e-4, 1e-1] }
model.knobs.dropout = { uniform = [0.0, 0.5] }
optimizer.name = { choice = ["adam", "sgd"] }
"""


def search_experiments_file(tmp_path, search_table: str | None = None):
    """``SEARCH_EXPERIMENT`` written to ``tmp_path/experiments.toml``, its ``[search]`` table replaced if given."""
    text = (SEARCH_EXPERIMENT if search_table is None
            else SEARCH_EXPERIMENT.split("[experiments.tiny.search]")[0] + search_table)
    path = tmp_path / "experiments.toml"
    path.write_text(textwrap.dedent(text))
    return path


# --- photos with real faces ---------------------------------------------------------------------

# The real data lives in shared/ beside the checkout (never copied into the repository).
FER = Path(os.environ.get("FER2013_CSV", Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013" / "fer2013.csv.gz"))
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
