"""Learning-rate schedules as pure functions of one shared state structure.

constant, cosine (CosineAnnealingLR), step (StepLR) and plateau (ReduceLROnPlateau) all use the
same flat dict of tensors, with the kind stored as a tensor and the lr chosen by ``torch.where``,
so a population mixing kinds is one stacked state and one vmapped, compiled function; nothing
branches in Python on a value.

Protocol (the engine calls these; every function returns a new state):
  ``lr(state)``                 the lr to use for the next optimizer update
  ``after_step(state)``         after every optimizer update (advances ``unit="step"`` schedules)
  ``after_epoch(state, metric)`` once per epoch with the validation metric (advances ``unit="epoch"``
                                schedules; ReduceLROnPlateau reacts to ``metric``)

cosine and step use the closed forms torch's recursive ``get_lr`` approximates
(``eta_min + (base - eta_min) * (1 + cos(pi t / T_max)) / 2`` -- periodic past T_max exactly like
torch -- and ``base * gamma ** (t // step_size)``); they agree to float64 rounding.
plateau is torch's ``step(metric)`` line for line, on tensors.
"""
from __future__ import annotations

import math

import torch

from fer_func.config import ScheduleConfig

KINDS = {"constant": 0, "cosine": 1, "step": 2, "plateau": 3}
PLATEAU_EPS = 1e-8  # torch ReduceLROnPlateau's default ``eps``; ScheduleConfig has no field for it


def init(cfg: ScheduleConfig, base_lr: float, total_epochs: int, steps_per_epoch: int,
         dtype: torch.dtype = torch.float32, device=None) -> dict:
    """The schedule state for one variant. ``t_max = 0`` means the whole run, counted in ``cfg.unit``s.
    ``base_lr`` is ``OptimizerConfig.lr``, validated there (config.py: the one rule for a learning rate)."""
    if not isinstance(cfg, ScheduleConfig):
        raise TypeError(f"schedules.init expects a ScheduleConfig, got {type(cfg).__name__}")
    for name, v in (("total_epochs", total_epochs), ("steps_per_epoch", steps_per_epoch)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} = {v!r}: must be a positive integer")
    per_step = cfg.unit == "step"
    t_max = cfg.t_max or (total_epochs * steps_per_epoch if per_step else total_epochs)

    def f(v):
        return torch.tensor(float(v), dtype=dtype, device=device)

    def i(v):
        return torch.tensor(int(v), dtype=torch.int64, device=device)

    def b(v):
        return torch.tensor(bool(v), device=device)

    state = {
        "kind": i(KINDS[cfg.name]), "per_step": b(per_step), "t": i(0),
        "base_lr": f(base_lr), "lr": f(base_lr),
        # cosine / step
        "t_max": f(t_max), "eta_min": f(cfg.eta_min), "step_size": i(cfg.step_size), "gamma": f(cfg.gamma),
        # plateau (torch attribute names)
        "mode_max": b(cfg.mode == "max"), "rel": b(cfg.threshold_mode == "rel"), "factor": f(cfg.factor),
        "patience": i(cfg.patience), "threshold": f(cfg.threshold), "cooldown": i(cfg.cooldown),
        "min_lr": f(cfg.min_lr), "eps": f(PLATEAU_EPS),
        "best": f(-math.inf if cfg.mode == "max" else math.inf),
        "num_bad_epochs": i(0), "cooldown_counter": i(0),
    }
    return {**state, "lr": lr_at(state)}


def lr(state: dict) -> torch.Tensor:
    """The current learning rate (0-d; (K,) for a stacked state)."""
    return state["lr"]


def lr_at(s: dict) -> torch.Tensor:
    # Closed forms for the counter-driven kinds; plateau and constant keep the stored lr.
    t = s["t"].to(s["base_lr"].dtype)
    cosine = s["eta_min"] + (s["base_lr"] - s["eta_min"]) * (1 + torch.cos(t * math.pi / s["t_max"])) / 2
    step = s["base_lr"] * s["gamma"] ** torch.div(s["t"], s["step_size"], rounding_mode="floor")
    kind = s["kind"]
    return torch.where(kind == KINDS["cosine"], cosine, torch.where(kind == KINDS["step"], step, s["lr"]))


def after_step(state: dict) -> dict:
    """Call after every optimizer update: per-step cosine/step schedules advance one unit."""
    s = {**state, "t": state["t"] + state["per_step"].to(torch.int64)}
    return {**s, "lr": lr_at(s)}


def after_epoch(state: dict, metric) -> dict:
    """Call once per epoch with the validation metric: per-epoch schedules advance; plateau reacts.

    ``metric`` is a float or 0-d tensor (per-variant under vmap); NaN counts as "not better", as in torch.
    """
    s = dict(state)
    s["t"] = s["t"] + (~s["per_step"]).to(torch.int64)
    m = torch.as_tensor(metric).to(dtype=s["best"].dtype, device=s["best"].device)

    # ReduceLROnPlateau.step(), on tensors. The statistics run for every kind (harmless: only
    # a plateau variant's lr reads them), which keeps the state structure identical across kinds.
    best, thr = s["best"], s["threshold"]
    better = torch.where(s["mode_max"],
                         torch.where(s["rel"], m > best * (thr + 1.0), m > best + thr),
                         torch.where(s["rel"], m < best * (1.0 - thr), m < best - thr))
    s["best"] = torch.where(better, m, best)
    bad = torch.where(better, torch.zeros_like(s["num_bad_epochs"]), s["num_bad_epochs"] + 1)
    in_cooldown = s["cooldown_counter"] > 0
    counter = torch.where(in_cooldown, s["cooldown_counter"] - 1, s["cooldown_counter"])
    bad = torch.where(in_cooldown, torch.zeros_like(bad), bad)  # bad epochs in cooldown are ignored
    reduce = bad > s["patience"]
    old = s["lr"]
    new = torch.maximum(old * s["factor"], s["min_lr"])
    plateau_lr = torch.where(reduce & (old - new > s["eps"]), new, old)
    s["cooldown_counter"] = torch.where(reduce, s["cooldown"], counter)
    s["num_bad_epochs"] = torch.where(reduce, torch.zeros_like(bad), bad)

    s["lr"] = torch.where(s["kind"] == KINDS["plateau"], plateau_lr, s["lr"])
    return {**s, "lr": lr_at(s)}
