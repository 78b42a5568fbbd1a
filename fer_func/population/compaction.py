"""Compaction: a population whose variants have ended goes on with the live ones only.

A diverged or early-stopped variant is frozen: its micro-steps are masked, so it changes nothing,
yet the vmapped step still computes it. Once enough of a population has ended (a learning-rate
study's 0.1 and 0.01 runs collapse within a few epochs), the step is cheaper run at the smaller K:

    keep = live_positions(ended)            positions (in the computed carry) still training
    carry, hp, parked = split(carry, hp, keep)

``parked`` holds each ended variant's final state, one member per ended position, so the
population can still report it (``Population.member``). Nothing else changes for a live variant:
its random streams are its own (fold-ins of its seed), so it draws the same numbers at any K.

Compaction costs a compile of the step and evaluation at the new K (or a load, when an earlier
process saved them), so :func:`worth_it` compacts only when the compute it saves over the epochs
left is larger than that.
"""
from __future__ import annotations

import numpy as np
import torch

from fer_func import tree
from fer_func.population import slots


def live_positions(ended: np.ndarray) -> np.ndarray:
    """Positions of the computed carry whose variant is still training."""
    return np.flatnonzero(~np.asarray(ended, dtype=bool))


def split(carry: dict, hp: dict, keep: np.ndarray) -> tuple[dict, dict, dict[int, dict]]:
    """The carry and hp of the positions in ``keep`` (order kept), and every other position's member."""
    index = torch.as_tensor(keep, dtype=torch.int64, device=tree.leaves(carry)[0].device)
    parked = {j: tree.clone(tree.index(carry, j)) for j in range(int(carry["step"].shape[0])) if j not in set(keep)}
    return slots.gather(carry, index), slots.gather(hp, index), parked


def worth_it(k: int, live: int, epoch_s: float, epochs_left: int, compile_s: float, margin: float = 2.0) -> bool:
    """Compact K computed variants to ``live`` when the step time it saves over ``epochs_left`` epochs
    (taken as proportional to K, which a CPU's narrow convolutions roughly are) exceeds ``margin``
    compiles: a first compile here costs as much as the step and evaluation programs together."""
    if live == 0 or live >= k or epochs_left <= 0:
        return False
    saved = epoch_s * (k - live) / k * epochs_left
    return saved > margin * compile_s
