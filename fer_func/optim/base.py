"""The optimizer protocol: two pure functions, and hyperparameters that live in the state.

An :class:`Optimizer` is ``init(params) -> state`` and ``update(grads, state, params) -> (updates,
state)``; :func:`apply_updates` adds the updates to the params. Nothing is mutated, so an update
can be ``vmap``'ed over a population and ``torch.compile``'d as one graph.

:func:`inject_hyperparams` is optax's idea of the same name: the numeric hyperparameters (lr,
betas, weight decay, ...) are 0-d tensors in ``state["hparams"]`` rather than Python floats in a
closure. The update rebuilds its transform chain from those tensors on every call, so a stack of
states with different values is a population, a changed value is just new data (no recompile), and
the scheduler writes the lr with :func:`with_hparams`. A population keeps its lr in the schedule state
alone: its carried optimizer state has no lr (:func:`without_hparams`), and the step passes the
scheduled one in for each update (:func:`add_hparams`). Booleans that change the code path
(``nesterov``, ``centered``) stay static Python in the closure.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from fer_func import tree

Tree = dict


class Optimizer(NamedTuple):
    """``init(params) -> state``; ``update(grads, state, params) -> (updates, state)``."""
    init: Callable
    update: Callable


def apply_updates(params: Tree, updates: Tree) -> Tree:
    """``params + updates`` leafwise, keeping each param's dtype."""
    return tree.tree_map(lambda p, u: (p + u).to(p.dtype), params, updates)


def chain(*transforms: Optimizer) -> Optimizer:
    """Run transforms in order, each feeding its updates to the next; state is ``{"0": s0, "1": s1, ...}``."""
    def init(params):
        return {str(i): t.init(params) for i, t in enumerate(transforms)}

    def update(grads, state, params):
        new_state = {}
        for i, t in enumerate(transforms):
            grads, new_state[str(i)] = t.update(grads, state[str(i)], params)
        return grads, new_state

    return Optimizer(init, update)


def float_spec(params: Tree) -> tuple[torch.dtype, torch.device]:
    """The dtype and device hyperparameters take: those of the params' (all floating) leaves."""
    flat = tree.leaves(params)
    if not flat:
        raise ValueError("params has no tensors; an optimizer needs at least one floating-point parameter")
    for x in flat:
        if not x.is_floating_point():
            raise ValueError(f"params holds a {x.dtype} tensor of shape {tuple(x.shape)}; optimizers update "
                             f"floating-point params only (keep integer buffers in the model state)")
    return flat[0].dtype, flat[0].device


def inject_hyperparams(build: Callable[..., Optimizer], **hparams: float) -> Optimizer:
    """An optimizer whose numeric hyperparameters are 0-d tensors in ``state["hparams"]``.

    ``build(**hparams)`` must return the transform chain for given hyperparameter values and be
    cheap (it runs on every update); its state structure must not depend on the values.
    State: ``{"hparams": {name: 0-d tensor}, "inner": build(...).init(params)}``.
    """
    def init(params):
        dtype, device = float_spec(params)
        h = {k: torch.tensor(float(v), dtype=dtype, device=device) for k, v in hparams.items()}
        return {"hparams": h, "inner": build(**h).init(params)}

    def update(grads, state, params):
        updates, inner = build(**state["hparams"]).update(grads, state["inner"], params)
        return updates, {"hparams": state["hparams"], "inner": inner}

    return Optimizer(init, update)


def _as_like(value, old: torch.Tensor) -> torch.Tensor:
    # Broadcast so a scalar written into a stacked (K,) state keeps the population axis.
    if isinstance(value, torch.Tensor):
        return torch.broadcast_to(value.to(dtype=old.dtype, device=old.device), old.shape)
    return torch.full_like(old, float(value))


def hparam_names(state: Tree) -> set[str]:
    """Every hyperparameter name found in ``state`` (a plain or :func:`~fer_func.optim.select` state)."""
    if not isinstance(state, dict):
        return set()
    if "hparams" in state:
        return set(state["hparams"])
    return set().union(*(hparam_names(v) for v in state.values())) if state else set()


def with_hparams(state: Tree, **values) -> Tree:
    """A copy of ``state`` with the named hyperparameters replaced (floats or tensors, cast to the state's dtype).

    In a :func:`~fer_func.optim.select` state every rule that has the name gets the value, active or
    not, so ``with_hparams(state, lr=scheduled)`` needs no knowledge of which rule is active.
    """
    unknown = set(values) - hparam_names(state)
    if unknown:
        raise KeyError(f"unknown hyperparameter(s) {sorted(unknown)}; this optimizer state has "
                       f"{sorted(hparam_names(state))}")

    def go(s):
        if not isinstance(s, dict):
            return s
        if "hparams" in s:
            h = {k: _as_like(values[k], v) if k in values else v for k, v in s["hparams"].items()}
            return {**s, "hparams": h}
        return {k: go(v) for k, v in s.items()}

    return go(state)


def without_hparams(state: Tree, *names: str) -> Tree:
    """A copy of ``state`` with ``names`` removed from every hyperparameter table: for a value that
    another state holds (a population's lr lives in its schedule state; :func:`add_hparams` puts it back
    for an update)."""
    def go(s):
        if not isinstance(s, dict):
            return s
        if "hparams" in s:
            return {**s, "hparams": {k: v for k, v in s["hparams"].items() if k not in names}}
        return {k: go(v) for k, v in s.items()}

    return go(state)


def add_hparams(state: Tree, **values: torch.Tensor) -> Tree:
    """A copy of ``state`` (one :func:`without_hparams` made) with tensor ``values`` in every
    hyperparameter table, as :func:`with_hparams` writes them into a state that has them."""
    def go(s):
        if not isinstance(s, dict):
            return s
        if "hparams" in s:
            return {**s, "hparams": {**s["hparams"], **values}}
        return {k: go(v) for k, v in s.items()}

    return go(state)


def get_hparam(state: Tree, name: str) -> torch.Tensor:
    """The current value of hyperparameter ``name`` (for a select state: the active rule's value)."""
    if name not in hparam_names(state):
        raise KeyError(f"unknown hyperparameter {name!r}; this optimizer state has {sorted(hparam_names(state))}")
    if "hparams" in state:
        return state["hparams"][name]
    # A select state: pick the active rule's value; rules lacking ``name`` fall back to the first rule that has it.
    have = [(int(k), c) for k, c in state["choices"].items() if name in hparam_names(c)]
    value = get_hparam(have[0][1], name)
    for i, c in have[1:]:
        value = torch.where(state["index"] == i, get_hparam(c, name), value)
    return value
