"""k-fold cross-validation inside one population: per-variant training and validation index sets.

Variant i of a ``cv = k`` experiment trains on every Training fold but ``fold_i`` and validates on
fold ``fold_i`` (``fer_func.data.folds``: stratified, from a fixed key, so every configuration and
seed sees the same folds). Batches stay index gathers from the one Training tensor on the device and
there is still one compiled step: a variant's epoch order is a keyed permutation of *its own*
training indices, cut to the smallest training set of the population (fold sizes differ by at most
one image per fold, so at most ``k - 1`` images sit out each epoch, a different few every epoch).
Validation gathers each variant's fold, padded to the largest fold and masked by its own size.
"""
from __future__ import annotations

import torch

from fer_func import prng
from fer_func.data.folds import stratified_folds

FOLD_KEY = 20131  # the folds' key: fixed, so folds do not depend on a variant's seed


class Folds:
    def __init__(self, train_y: torch.Tensor, variants, device):
        ks = {v.cv for v in variants}
        if len(ks) != 1 or any(v.fold < 0 for v in variants):
            raise ValueError(f"a cross-validation population needs one cv and a fold per variant, got cv = "
                             f"{sorted(ks)} and folds {[v.fold for v in variants]}")
        self.k = ks.pop()
        self.fold_of = stratified_folds(train_y, self.k, prng.key(FOLD_KEY)).to(device)
        folds = [v.fold for v in variants]
        train = [torch.nonzero(self.fold_of != f).flatten() for f in folds]
        val = [torch.nonzero(self.fold_of == f).flatten() for f in folds]
        self.train_sizes = [int(t.numel()) for t in train]
        self.num_train = min(self.train_sizes)
        self.train_index = _padded(train)                                   # (K, max n_train)
        self.val_index = _padded(val)                                       # (K, max n_val)
        self.val_sizes = torch.tensor([int(v.numel()) for v in val], device=device)

    def epoch_order(self, data_keys, own_epochs) -> torch.Tensor:
        """(K, num_train) global Training indices: each variant's own training set in its epoch's order."""
        rows = []
        for i, (key, epoch) in enumerate(zip(data_keys, own_epochs)):
            n = self.train_sizes[i]
            rows.append(self.train_index[i, prng.permutation(prng.fold_in(key, int(epoch)), n)][:self.num_train])
        return torch.stack(rows)

    def val_split(self, train_x, train_y):
        """Each variant's validation fold: images (K, M, 48, 48), labels (K, M), sizes (K,)."""
        return train_x[self.val_index], train_y[self.val_index], self.val_sizes


def _padded(rows: list[torch.Tensor]) -> torch.Tensor:
    width = max(int(r.numel()) for r in rows)
    return torch.stack([torch.cat([r, r[:1].expand(width - r.numel())]) for r in rows])
