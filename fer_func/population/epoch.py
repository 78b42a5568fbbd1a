"""The end of a population's epoch, on the host: divergence, validation, schedules, best networks,
early stopping and the epoch's record. One function over the population's state, run once per epoch
after the last step (``Population.train_epoch``), reading back only the metrics it reports.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from fer_func import tree
from fer_func.optim import schedules
from fer_func.population import slots
from fer_func.population.step import all_finite

if TYPE_CHECKING:
    from fer_func.population.population import Population


def end_epoch(pop: Population, train_s: float) -> dict:
    """Close the epoch just trained and return its per-variant record (K-wide numpy values)."""
    carry = pop.carry
    # The step checks loss and gradients only (step.py), so an update that overflowed is committed.
    # One reduction per epoch catches it: the variant is diverged from here on and keeps the best
    # parameters it had, never non-finite ones.
    finite = torch.func.vmap(all_finite)({"params": carry["params"], "state": carry["model_state"]})
    newly = ~finite & ~carry["diverged"]
    carry["diverged"] = carry["diverged"] | newly
    carry["diverged_step"] = torch.where(newly, carry["step"], carry["diverged_step"])
    mt = carry["metrics"]
    count = mt["count"].clamp(min=1)
    trained_lr = carry["sched"]["lr"]  # the rate of this epoch's updates (epoch-unit schedules), before it steps
    val = pop.evaluate("val")
    pick = torch.func.vmap(tree.where)
    # Plateau watches validation accuracy in mode "max" and validation loss in mode "min" (torch's
    # convention for a loss); feeding accuracy to "min" would cut the rate while it improves.
    as_t = lambda x: torch.as_tensor(x, dtype=pop.dtype, device=pop.device)
    watched = torch.where(carry["sched"]["mode_max"], as_t(val["acc"]), as_t(val["loss"]))
    stepped = torch.func.vmap(schedules.after_epoch)(carry["sched"], watched)
    # A diverged or early-stopped variant is frozen: its schedule does not move either.
    live = torch.as_tensor(pop.live, device=pop.device)
    frozen = carry["diverged"] | torch.as_tensor(pop.stopped_epoch[pop.live] >= 0, device=pop.device)
    carry["sched"] = pick(frozen, carry["sched"], stepped)
    # The best networks are kept for every variant (K-wide); the computed ones update their rows.
    best = pop.best
    best_before = best["val_acc"].cpu().numpy()
    acc = torch.as_tensor(val["acc"], device=pop.device)
    improved = (acc > best["val_acc"][live]) & finite
    for key in ("params", "model_state"):
        kept = slots.gather(best[key], live)
        best[key] = slots.scatter(best[key], live, pick(improved, carry[key], kept))
    own_epoch = torch.as_tensor(pop.epoch - pop.slot_start[pop.live], device=pop.device)
    for key, new in (("val_acc", acc), ("epoch", own_epoch)):
        best[key] = best[key].index_copy(0, live, torch.where(improved, new, best[key][live]))
    # Per-variant numbers, K-wide: an ended variant that compaction parked records what its frozen
    # slot would (no training steps: zero train metrics; unchanged parameters: its last val and lr).
    last = pop.history[-1] if pop.history else {}  # parked variants exist only after a record
    widen = lambda values, parked: _widen(pop, values, parked)
    train_loss = widen((mt["loss_sum"] / count).double().cpu().numpy(), 0.0)
    train_acc = widen((mt["correct"] / count).double().cpu().numpy(), 0.0)
    val_acc = widen(val["acc"], last.get("val_acc", np.nan))
    val_loss = widen(val["loss"], last.get("val_loss", np.nan))
    lr = widen(trained_lr.double().cpu().numpy(), last.get("lr", np.nan))
    if last:  # a slot frozen before this epoch made no update in it: its last update's rate stands
        lr = np.where(last["diverged"] | last["stopped"], last["lr"], lr)
    early_stop(pop, val_acc, best_before)
    carry["metrics"] = tree.tree_map(torch.zeros_like, mt)
    diverged = pop.diverged()
    record = {"epoch": pop.epoch, "train_loss": np.where(diverged, np.nan, train_loss), "train_acc": train_acc,
              "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
              "diverged": diverged, "stopped": pop.stopped_epoch >= 0, "epoch_s": train_s,
              # the K this epoch computed (compaction lowers it) and its seconds of steady-state steps
              "k": len(pop.live), "compute_s": train_s - pop._epoch_compile_s}
    pop.history.append(record)
    return record


def _widen(pop: Population, live_values: np.ndarray, parked) -> np.ndarray:
    """(K,) from the computed variants' values; ``parked`` (a number, or K values) for the others."""
    full = np.array(np.broadcast_to(parked, (len(pop.variants),)), dtype=np.float64)
    full[pop.live] = live_values
    return full


def early_stop(pop: Population, val_acc, best_before):
    """A variant with ``early_stopping.patience = P`` that has not raised its best validation
    accuracy by more than ``min_delta`` for P epochs stops: its slot freezes (masked updates, as a
    diverged variant's) and keeps its best epoch."""
    gained = np.asarray(val_acc) > best_before + np.array([v.early_stopping.min_delta for v in pop.variants])
    pop.since_gain = np.where(gained, 0, pop.since_gain + 1)
    patience = np.array([v.early_stopping.patience for v in pop.variants])
    # Diverged variants (this epoch or any before: carry["diverged"] is already updated) are frozen
    # for that reason and are not reported as stopped.
    running = (pop.stopped_epoch < 0) & ~pop.diverged()
    stop = running & (patience > 0) & (pop.since_gain >= patience)
    for i in np.flatnonzero(stop):
        pop.stopped_epoch[i] = pop.slot_epoch(int(i))  # the own epoch just completed, 0-based
        pop.freeze(int(i))
