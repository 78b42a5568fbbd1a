"""Slot operations: pure functions over a population's stacked state (leading axis K).

A population holds K models as one stacked pytree, so a search changes *which* model a slot holds
with tensor ops on the device, never with a checkpoint file or a recompile:

    put(stacked, i, member)   slot ``i`` takes ``member`` (a new trial starts there)
    gather(stacked, src)      slot ``j`` takes slot ``src[j]``'s state (PBT's exploit: losers copy winners)
    scatter(stacked, idx, m)  slot ``idx[j]`` takes member ``j`` of ``m`` (a compacted population's rows)
    freeze(hp, mask)          masked slots stop training (no trial left to run there)
    with_hparams_of(old, new) ``old``'s weights, buffers and counters with ``new``'s hyperparameters

Each returns a new tree and leaves its inputs alone, so the population's compiled step sees tensors
of the same shapes, dtypes and devices before and after: nothing it was specialised on changes.
"""
from __future__ import annotations

import torch

from fer_func import tree


def put(stacked, i: int, member):
    """``stacked`` with member ``i`` replaced by ``member`` (same structure, no leading axis)."""
    def one(s, m):
        idx = torch.tensor([i], device=s.device)
        return s.index_copy(0, idx, m.to(device=s.device, dtype=s.dtype).unsqueeze(0))
    return tree.tree_map(one, stacked, member)


def gather(stacked, src: torch.Tensor):
    """Member ``j`` of the result is member ``src[j]`` of ``stacked``: one index_select per leaf, on the device."""
    return tree.tree_map(lambda s: s.index_select(0, src.to(s.device)), stacked)


def scatter(stacked, index: torch.Tensor, members):
    """``stacked`` with member ``index[j]`` replaced by member ``j`` of ``members`` (also stacked)."""
    return tree.tree_map(lambda s, m: s.index_copy(0, index.to(s.device), m.to(s.dtype)), stacked, members)


def freeze(hp: dict, mask: torch.Tensor) -> dict:
    """Masked slots train no further micro-steps.

    The step already masks micro-steps past a variant's ``active_steps`` (how shorter epochs idle in
    a batch-size population), so a frozen slot is one with no active steps: it computes, is masked,
    and nothing of it changes. Its evaluation still runs, as part of the population's.
    """
    return {**hp, "active_steps": torch.where(mask.to(hp["active_steps"].device), 0, hp["active_steps"])}


# What a fresh variant config decides (its hyperparameters) versus what training has made (weights,
# buffers, counters, running statistics). Schedule counters keep running; its settings change.
_SCHEDULE_SETTINGS = ("kind", "per_step", "base_lr", "t_max", "eta_min", "step_size", "gamma", "mode_max", "rel",
                      "factor", "patience", "threshold", "cooldown", "min_lr", "eps")


def with_hparams_of(old_carry: dict, old_hp: dict, new_carry: dict, new_hp: dict) -> tuple[dict, dict]:
    """One member's state that keeps ``old``'s training and takes ``new``'s hyperparameters.

    ``new_*`` is a freshly initialised member for the new configuration (its weights are ignored):
    every optimizer ``hparams`` table, the schedule's settings (its counters and plateau statistics
    stay), and ``hp``'s per-variant switches (dropout rates, augmentation, class weighting) come from
    it. The learning rate is re-derived from the new settings at the old position of the schedule.
    """
    from fer_func.optim import schedules

    carry = dict(old_carry)
    carry["opt_state"] = _take_hparams(old_carry["opt_state"], new_carry["opt_state"])
    sched = {**old_carry["sched"], **{k: new_carry["sched"][k] for k in _SCHEDULE_SETTINGS}}
    # constant and plateau keep a stored lr: a new base rate replaces it, scaled like the old one was
    # (a plateau that already cut 10x keeps that cut relative to the new base).
    ratio = torch.where(old_carry["sched"]["base_lr"] > 0, old_carry["sched"]["lr"] / old_carry["sched"]["base_lr"],
                        torch.ones_like(old_carry["sched"]["lr"]))
    sched["lr"] = sched["base_lr"] * ratio
    carry["sched"] = {**sched, "lr": schedules.lr_at(sched)}
    hp = {**old_hp, **{k: new_hp[k] for k in ("augment", "class_weighted", "dropout")}}
    return carry, hp


def _take_hparams(old, new):
    if not isinstance(old, dict):
        return old
    return {k: (new[k] if k == "hparams" else _take_hparams(v, new[k])) for k, v in old.items()}
