"""torch.optim's SGD, Adam, AdamW and RMSprop as functional optimizers with injected hyperparameters.

Each alias validates its values here, at build time, with torch.optim's messages (a traced update
never checks a value), then chains small transforms; the learning rate is validated once, by
``OptimizerConfig`` (config.py), which is how the study's optimizers are built. Defaults equal torch.optim's. The numeric
values become 0-d tensors in ``state["hparams"]``; ``nesterov`` and ``centered`` stay static.
"""
from __future__ import annotations

import math

from fer_func.config import OptimizerConfig
from fer_func.optim import transforms as T
from fer_func.optim.base import Optimizer, chain, inject_hyperparams


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite Python number; batched values go in "
                         f"the state via with_hparams)")
    return float(value)


def _require(ok: bool, message: str):
    if not ok:
        raise ValueError(message)


def sgd(lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0) -> Optimizer:
    """torch.optim.SGD: hparams ``lr, momentum, dampening, weight_decay``; ``nesterov`` static."""
    lr, momentum, dampening, weight_decay = (_number(n, v) for n, v in
        (("learning rate", lr), ("momentum value", momentum), ("dampening", dampening), ("weight_decay value", weight_decay)))
    _require(momentum >= 0, f"Invalid momentum value: {momentum} (must be >= 0)")
    _require(weight_decay >= 0, f"Invalid weight_decay value: {weight_decay} (must be >= 0)")
    _require(not nesterov or (momentum > 0 and dampening == 0),
             f"Nesterov momentum requires a momentum and zero dampening (got momentum={momentum}, "
             f"dampening={dampening}); set nesterov=False or momentum > 0 and dampening=0")

    def build(lr, momentum, dampening, weight_decay):
        return chain(T.add_decayed_weights(weight_decay), T.trace(momentum, dampening, nesterov),
                     T.scale_by_learning_rate(lr))

    return inject_hyperparams(build, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay)


def _check_adam(lr, betas, eps, weight_decay):
    lr, eps, weight_decay = _number("learning rate", lr), _number("epsilon value", eps), _number("weight_decay value", weight_decay)
    _require(isinstance(betas, (tuple, list)) and len(betas) == 2, f"Invalid betas: {betas!r} (must be a pair (beta1, beta2))")
    b1, b2 = _number("beta parameter at index 0", betas[0]), _number("beta parameter at index 1", betas[1])
    _require(eps >= 0, f"Invalid epsilon value: {eps} (must be >= 0)")
    _require(0 <= b1 < 1, f"Invalid beta parameter at index 0: {b1} (must be in [0, 1))")
    _require(0 <= b2 < 1, f"Invalid beta parameter at index 1: {b2} (must be in [0, 1))")
    _require(weight_decay >= 0, f"Invalid weight_decay value: {weight_decay} (must be >= 0)")
    return dict(lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=weight_decay)


def adam(lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0) -> Optimizer:
    """torch.optim.Adam (coupled L2: decay enters the gradient): hparams ``lr, beta1, beta2, eps, weight_decay``."""
    def build(lr, beta1, beta2, eps, weight_decay):
        return chain(T.add_decayed_weights(weight_decay), T.scale_by_adam(beta1, beta2, eps),
                     T.scale_by_learning_rate(lr))

    return inject_hyperparams(build, **_check_adam(lr, betas, eps, weight_decay))


def adamw(lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2) -> Optimizer:
    """torch.optim.AdamW (decoupled: ``p -= lr * weight_decay * p`` beside the Adam step)."""
    def build(lr, beta1, beta2, eps, weight_decay):
        # Decay added after Adam's scaling, so it is not normalised by sqrt(v): the decoupled form.
        return chain(T.scale_by_adam(beta1, beta2, eps), T.add_decayed_weights(weight_decay),
                     T.scale_by_learning_rate(lr))

    return inject_hyperparams(build, **_check_adam(lr, betas, eps, weight_decay))


def rmsprop(lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
            momentum: float = 0.0, centered: bool = False) -> Optimizer:
    """torch.optim.RMSprop: hparams ``lr, alpha, eps, weight_decay, momentum``; ``centered`` static."""
    lr, alpha, eps, weight_decay, momentum = (_number(n, v) for n, v in
        (("learning rate", lr), ("alpha value", alpha), ("epsilon value", eps), ("weight_decay value", weight_decay),
         ("momentum value", momentum)))
    _require(eps >= 0, f"Invalid epsilon value: {eps} (must be >= 0)")
    _require(momentum >= 0, f"Invalid momentum value: {momentum} (must be >= 0)")
    _require(weight_decay >= 0, f"Invalid weight_decay value: {weight_decay} (must be >= 0)")
    _require(alpha >= 0, f"Invalid alpha value: {alpha} (must be >= 0)")

    def build(lr, alpha, eps, weight_decay, momentum):
        return chain(T.add_decayed_weights(weight_decay), T.scale_by_rms(alpha, eps, momentum, centered),
                     T.scale_by_learning_rate(lr))

    return inject_hyperparams(build, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)


def from_config(cfg: OptimizerConfig) -> Optimizer:
    """The optimizer an :class:`~fer_func.config.OptimizerConfig` names, with its values."""
    if cfg.name == "sgd":
        return sgd(cfg.lr, cfg.momentum, cfg.dampening, cfg.nesterov, cfg.weight_decay)
    if cfg.name == "adam":
        return adam(cfg.lr, (cfg.beta1, cfg.beta2), cfg.eps, cfg.weight_decay)
    if cfg.name == "adamw":
        return adamw(cfg.lr, (cfg.beta1, cfg.beta2), cfg.eps, cfg.weight_decay)
    if cfg.name == "rmsprop":
        return rmsprop(cfg.lr, cfg.alpha, cfg.eps, cfg.weight_decay, cfg.momentum, cfg.centered)
    raise ValueError(f"optimizer.name = {cfg.name!r}: unknown optimizer; choose sgd, adam, adamw or rmsprop")
