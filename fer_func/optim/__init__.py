"""Functional optimizers (optax design, torch.optim semantics) and learning-rate schedules.

    opt = optim.adam(lr=1e-3)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = optim.apply_updates(params, updates)
    state = optim.with_hparams(state, lr=schedules.lr(sched))   # the scheduler's lr, no recompile
"""
from fer_func.optim import schedules, transforms
from fer_func.optim.alias import adam, adamw, from_config, rmsprop, sgd
from fer_func.optim.base import (Optimizer, add_hparams, apply_updates, chain, get_hparam, hparam_names,
                                 inject_hyperparams, with_hparams, without_hparams)
from fer_func.optim.select import active_state, from_configs, select

__all__ = ["Optimizer", "apply_updates", "chain", "inject_hyperparams", "with_hparams", "without_hparams", "add_hparams",
           "get_hparam", "hparam_names",
           "sgd", "adam", "adamw", "rmsprop", "from_config", "select", "active_state", "from_configs", "schedules", "transforms"]
