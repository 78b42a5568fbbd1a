"""The one dataset type every source returns: three splits of uint8 48x48 images and int64 labels.

The dataset stays a handful of tensors. The engine moves it to the device once (:meth:`FERData.to`)
and a batch is an index gather, airbench-style; there is no DataLoader and no per-image Python.
Split names follow torchvision's FER2013 reading of the Kaggle ``Usage`` column: ``train`` is
``Training``; torchvision's ``test`` is ``PublicTest + PrivateTest``, which we keep apart as
``val`` (PublicTest, for model selection) and ``test`` (PrivateTest, reported once).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

CLASS_NAMES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
SPLITS = ("train", "val", "test")
USAGES = ("Training", "PublicTest", "PrivateTest")  # the Kaggle Usage value of each split, in order
IMAGE_SHAPE = (48, 48)


class DataError(ValueError):
    """A problem with a user's data file: the one-line message names the file, the rows and the fix."""


@dataclass(frozen=True)
class FERData:
    """``images[split]``: uint8 ``(N, 48, 48)``; ``labels[split]``: int64 ``(N,)`` in ``0..6``."""
    images: dict
    labels: dict
    source: str                         # where the data came from, for logs and reports
    class_names: tuple = CLASS_NAMES
    skipped_rows: int = 0               # bad rows dropped by ``skip_bad_rows=True``
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        for s in SPLITS:
            x, y = self.images[s], self.labels[s]
            assert x.dtype == torch.uint8 and x.shape[1:] == IMAGE_SHAPE, f"images[{s!r}]: {x.dtype} {tuple(x.shape)}"
            assert y.dtype == torch.int64 and y.shape == x.shape[:1], f"labels[{s!r}]: {y.dtype} {tuple(y.shape)}"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of one split."""
        if name not in SPLITS:
            raise KeyError(f"split {name!r} does not exist; choose one of {', '.join(SPLITS)}")
        return self.images[name], self.labels[name]

    def counts(self, name: str) -> list[int]:
        """Images per class in one split."""
        return torch.bincount(self.labels[name].cpu(), minlength=self.num_classes).tolist()

    def to(self, device) -> "FERData":
        """The same data on ``device`` (done once; batches are then index gathers on the device)."""
        return dataclasses.replace(self, images={s: x.to(device) for s, x in self.images.items()},
                                   labels={s: y.to(device) for s, y in self.labels.items()})

    def limit_train(self, n: int | None) -> "FERData":
        """Keep only the first ``n`` training images (quick runs); ``None`` keeps all. Val/test are untouched."""
        if n is None:
            return self
        if not isinstance(n, int) or n <= 0:
            raise DataError(f"limit_train n = {n!r}: must be a positive integer (or None for all)")
        return dataclasses.replace(self, images={**self.images, "train": self.images["train"][:n]},
                                   labels={**self.labels, "train": self.labels["train"][:n]})

    def describe(self) -> str:
        """One line: source and split sizes, e.g. for the start of a run log."""
        sizes = ", ".join(f"{s} {len(self.labels[s])}" for s in SPLITS)
        extra = f", {self.skipped_rows} bad rows skipped" if self.skipped_rows else ""
        return f"{self.source} ({sizes}{extra})"
