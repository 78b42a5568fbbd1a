"""A variant's state at its start: the carry the step changes, the hp it only reads, and the best record.

    models = init_models(model, variants, device)                       # [(params, model_state)] per variant
    carry, hp = init_variant(plan, optimizer, i, v, *models[i], dtype, device)
    best = init_best(stacked_carry, k)                                  # K-wide: no best epoch yet

``carry`` holds params, BN state, optimizer and schedule state, the noise key, counters, the
divergence flag and epoch metric sums; ``hp`` holds per-variant constants (steps per epoch, micro
steps per update, augmentation and class weighting on/off, dropout rates, the data key). The
population stacks them on a leading K axis; slots.py replaces one row when a slot starts afresh.
"""
from __future__ import annotations

import torch

from fer_func import optim, prng, tree
from fer_func.config import VariantConfig
from fer_func.optim import schedules
from fer_func.optim.flat import Ravel
from fer_func.population.plan import Plan, dropout_rates
from fer_func.population.step import DATA_STREAM, INIT_STREAM, NOISE_STREAM


def init_models(model, variants: list[VariantConfig], device: torch.device,
                vectorized: bool | None = None) -> list[tuple[dict, dict]]:
    """Every variant's initial (params, model_state) from its seed's init stream, on the device.

    On an accelerator all K draw at once under ``vmap`` (a few large kernels instead of K times
    every layer's); on a CPU one variant at a time is faster, as the draws then run in
    cache-sized chunks. The numbers are the same either way (tests check it bit for bit).
    """
    keys = torch.stack([prng.fold_in(prng.key(v.seed), INIT_STREAM) for v in variants]).to(device)
    if vectorized is None:
        vectorized = device.type != "cpu"
    if vectorized:
        params, states = torch.func.vmap(model.init)(keys)
        return [(tree.index(params, i), tree.index(states, i)) for i in range(len(variants))]
    return [model.init(k) for k in keys]


def init_variant(plan: Plan, optimizer, i: int, v: VariantConfig, params: dict, model_state: dict,
                 dtype: torch.dtype, device: torch.device) -> tuple[dict, dict]:
    """Slot ``i``'s (carry, hp) for variant ``v`` starting from ``params``/``model_state``."""
    root = prng.key(v.seed).to(device)
    params, model_state = tree.to(params, device, dtype), tree.to(model_state, device, dtype)
    n_micro = v.batch_size // plan.micro_batch
    updates_per_epoch = plan.active_steps[i] // n_micro
    sched = schedules.init(v.schedule, v.optimizer.lr, v.epochs, updates_per_epoch, dtype, device)
    # The learning rate is held once, in the schedule state (which computes it and, for plateau, needs
    # it as state); the step hands it to each update, so the optimizer state carries none.
    opt_state = optim.without_hparams(optimizer.init(params), "lr")
    zero = lambda dt=dtype: torch.zeros((), dtype=dt, device=device)
    carry = {"params": params, "model_state": model_state, "opt_state": opt_state, "sched": sched,
             "noise_key": prng.fold_in(root, NOISE_STREAM), "step": zero(torch.int64),
             "diverged": torch.zeros((), dtype=torch.bool, device=device),
             "diverged_step": torch.full((), -1, dtype=torch.int64, device=device),
             "metrics": {"loss_sum": zero(), "correct": zero(), "count": zero()}}
    if plan.accumulate:
        carry["grad_acc"] = Ravel(params).flat(tree.tree_map(torch.zeros_like, params))  # {"flat": zeros}
        carry["micro"] = zero(torch.int64)
    as_t = lambda x, dt: torch.tensor(x, dtype=dt, device=device)
    dropout = {k: as_t(rate, dtype) for k, rate in dropout_rates(v, plan.varying_dropout)}
    hp = {"active_steps": as_t(plan.active_steps[i], torch.int64), "n_micro": as_t(n_micro, torch.int64),
          "augment": as_t(v.augment.enabled, torch.bool), "class_weighted": as_t(v.class_weighted, torch.bool),
          "dropout": dropout, "data_key": prng.fold_in(root, DATA_STREAM)}
    return carry, hp


def init_best(carry: dict, k: int, device: torch.device) -> dict:
    """The best-epoch record before any epoch: the initial networks, val_acc -1 and epoch -1 (none kept)."""
    return {"params": tree.clone(carry["params"]), "model_state": tree.clone(carry["model_state"]),
            "val_acc": torch.full((k,), -1.0, dtype=torch.float64, device=device),
            "epoch": torch.full((k,), -1, dtype=torch.int64, device=device)}
