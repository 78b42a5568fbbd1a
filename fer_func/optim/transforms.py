"""Small gradient transforms that chain into torch.optim's update rules.

Each is an :class:`~fer_func.optim.base.Optimizer` over a params-shaped tree of updates. Numeric
arguments may be Python floats or 0-d tensors (the injected hyperparameters, batched under vmap);
boolean arguments pick the code path and must be Python bools. State names follow torch.optim's
``optimizer.state[p]`` (``momentum_buffer``, ``exp_avg``, ``square_avg``, ...) so the two compare
directly. Arithmetic mirrors torch.optim's single-tensor kernels op for op where it can, which is
why float64 results agree to ~1e-15.

The sign is flipped in exactly one place: :func:`scale_by_learning_rate`.
"""
from __future__ import annotations

import torch

from fer_func import tree
from fer_func.optim.base import Optimizer


def _zeros(params):
    return tree.tree_map(torch.zeros_like, params)


def _step0(params):
    return torch.zeros((), dtype=torch.int64, device=tree.leaves(params)[0].device)


def add_decayed_weights(weight_decay) -> Optimizer:
    """``u + weight_decay * p``. Before a scaling rule it is coupled L2 (SGD/Adam/RMSprop's
    ``weight_decay``); after it, as in :func:`~fer_func.optim.alias.adamw`, it is decoupled decay."""
    def update(updates, state, params):
        return tree.tree_map(lambda u, p: u + weight_decay * p, updates, params), state

    return Optimizer(lambda params: {}, update)


def trace(momentum, dampening, nesterov: bool) -> Optimizer:
    """SGD momentum: ``buf = momentum * buf + (1 - dampening) * u``, ``u = buf`` (or ``u + momentum * buf``).

    As in torch.optim.SGD the first step sets ``buf = u`` (no dampening), and ``momentum == 0``
    means no momentum at all (dampening ignored). The buffer always exists, so variants with and
    without momentum share one state structure and can be stacked.
    """
    def init(params):
        return {"step": _step0(params), "momentum_buffer": _zeros(params)}

    def update(updates, state, params):
        plain = (state["step"] == 0) | (momentum == 0)
        buf = tree.tree_map(lambda u, b: torch.where(plain, u, b * momentum + u * (1 - dampening)),
                            updates, state["momentum_buffer"])
        if nesterov:
            updates = tree.tree_map(lambda u, b: u + momentum * b, updates, buf)
        else:
            updates = buf
        return updates, {"step": state["step"] + 1, "momentum_buffer": buf}

    return Optimizer(init, update)


def scale_by_adam(beta1, beta2, eps) -> Optimizer:
    """Adam's direction ``(m / bc1) / (sqrt(v) / sqrt(bc2) + eps)``, with torch.optim.Adam's bias corrections."""
    def init(params):
        return {"step": _step0(params), "exp_avg": _zeros(params), "exp_avg_sq": _zeros(params)}

    def update(updates, state, params):
        step = state["step"] + 1
        m = tree.tree_map(lambda m, g: torch.lerp(m, g, 1 - beta1), state["exp_avg"], updates)
        v = tree.tree_map(lambda v, g: v * beta2 + (1 - beta2) * (g * g), state["exp_avg_sq"], updates)
        bc1 = 1 - beta1 ** step
        bc2_sqrt = (1 - beta2 ** step).sqrt()
        out = tree.tree_map(lambda m, v: (m / bc1) / (v.sqrt() / bc2_sqrt + eps), m, v)
        return out, {"step": step, "exp_avg": m, "exp_avg_sq": v}

    return Optimizer(init, update)


def scale_by_rms(alpha, eps, momentum, centered: bool) -> Optimizer:
    """RMSprop's direction ``u / (sqrt(square_avg [- grad_avg**2]) + eps)``, then heavy-ball momentum.

    torch.optim.RMSprop applies the lr to the momentum buffer at the end, so the buffer here holds
    unscaled directions and a changing lr matches it exactly. ``momentum == 0`` gives
    ``buf = 0 * buf + d = d``, so the buffer always exists and structures match across momentum values.
    """
    def init(params):
        # Key order must match update's: dict order is part of the pytree spec that compile guards on.
        s = {"step": _step0(params), "square_avg": _zeros(params)}
        if centered:
            s["grad_avg"] = _zeros(params)
        return {**s, "momentum_buffer": _zeros(params)}

    def update(updates, state, params):
        new = {"step": state["step"] + 1}
        sq = tree.tree_map(lambda s, g: s * alpha + (1 - alpha) * (g * g), state["square_avg"], updates)
        new["square_avg"] = sq
        if centered:
            ga = tree.tree_map(lambda a, g: torch.lerp(a, g, 1 - alpha), state["grad_avg"], updates)
            new["grad_avg"] = ga
            avg = tree.tree_map(lambda s, a: (s - a * a).sqrt() + eps, sq, ga)
        else:
            avg = tree.tree_map(lambda s: s.sqrt() + eps, sq)
        buf = tree.tree_map(lambda b, g, a: b * momentum + g / a, state["momentum_buffer"], updates, avg)
        new["momentum_buffer"] = buf
        return buf, new

    return Optimizer(init, update)


def scale_by_learning_rate(lr) -> Optimizer:
    """``-lr * u``: the one place the sign flips from a gradient direction to a descent step."""
    def update(updates, state, params):
        return tree.tree_map(lambda u: -lr * u, updates), state

    return Optimizer(lambda params: {}, update)
