"""Stratified k-fold splits of the Training split from a key: which fold each image belongs to.

Each class's images are put in a keyed random order (``prng.permutation``) and dealt round-robin to
the k folds, continuing the deal where the previous class stopped, so every fold gets each class's
share to within one image and the fold sizes differ by at most one. Same key, same folds, on any
device. A cross-validation population trains variant i on every fold but i and validates on fold i.
"""
from __future__ import annotations

import torch

from fer_func import prng


def stratified_folds(labels: torch.Tensor, k: int, key: torch.Tensor) -> torch.Tensor:
    """``(N,)`` int64: the fold (0..k-1) of every image, stratified by ``labels``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"cv = {k!r}: k-fold cross-validation needs an integer k >= 2")
    if labels.numel() < k:
        raise ValueError(f"cv = {k}: only {labels.numel()} training images; use fewer folds or more images")
    labels = labels.cpu()
    fold = torch.empty(labels.shape[0], dtype=torch.int64)
    dealt = 0
    for c in range(int(labels.max()) + 1):
        members = torch.nonzero(labels == c).flatten()
        order = members[prng.permutation(prng.fold_in(key, c), members.numel())]
        fold[order] = (dealt + torch.arange(order.numel())) % k
        dealt += order.numel()
    return fold


def train_and_val_indices(fold: torch.Tensor, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per fold i: (indices trained on = every other fold, indices validated on = fold i)."""
    return [(torch.nonzero(fold != i).flatten(), torch.nonzero(fold == i).flatten()) for i in range(k)]
