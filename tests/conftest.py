"""What several test modules share, in one place: test modules import these from here (``from conftest import
...``), never from one another, so each test module stands on its own.

- :func:`random_data`: a tiny FERData of random uint8 images, for the population tests;
- ``SMALL_CNN``, ``SMALL_BN``, ``BASE``, ``OPTIMIZERS``, ``SCHEDULES`` and :func:`mixed_variants`: the small
  variants the population equivalence tests train (one optimizer rule and schedule per variant);
- :func:`warm`: compile a population's step and evaluation before a test times or trains it;
- :func:`tiny_fer2013`: a FER2013-format CSV (the real ``emotion,pixels,Usage`` layout) of a few hundred images;
- ``QUICK`` and ``TINY``: the flags and the experiments file of a one-epoch study on that CSV;
- ``SEARCH_EXPERIMENT`` and :func:`search_experiments_file`: a tiny MLP with a ``[search]`` table.
"""
import textwrap

import numpy as np
import torch

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
