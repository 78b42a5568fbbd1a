"""One optimizer over several update rules, the active one chosen by a tensor in the state.

A population that mixes SGD, Adam and RMSprop variants still needs one state structure to stack
and one update to vmap. ``select(rules, index)`` runs every rule and keeps the active one's result
with ``torch.where`` (exact: no arithmetic mixes rules).

Memory: a variant only ever uses its own rule's buffers, so the rules *share* them. Each rule's
params-shaped buffers (SGD's momentum, Adam's two moments, RMSprop's square average and
momentum) are taken out of its state and stored once, by position, in ``state["buffers"]``: a
4-rule population holds max(buffers per rule) = 2 (3 with centered RMSprop) parameter-sized
buffers per variant instead of the sum, 7. An inactive rule reads another rule's buffers, and its
result is discarded by the ``where``. What stays per rule (hyperparameters, step counters) is small.

The update closes over static structure only (hyperparameters are read from the state), so any
member's ``update`` serves the whole stacked population. :func:`from_configs` builds such a list.
"""
from __future__ import annotations

from typing import Sequence

import torch

from fer_func import tree
from fer_func.config import OptimizerConfig
from fer_func.optim.alias import from_config
from fer_func.optim.base import Optimizer, float_spec

_PROBE = "__probe__"  # a one-parameter tree: whatever holds exactly this key set is a params-shaped buffer


def buffer_paths(state, path=()) -> list[tuple[str, ...]]:
    """Key paths of the params-shaped buffers in a state built on ``{_PROBE: tensor}``, in dict order."""
    if not isinstance(state, dict):
        return []
    if set(state) == {_PROBE}:
        return [path]
    return [p for k, v in state.items() for p in buffer_paths(v, path + (k,))]


def _get(state, path):
    for k in path:
        state = state[k]
    return state


def _without(state, paths):
    """A copy of ``state`` without the subtrees at ``paths`` (the remaining keys keep their order)."""
    drop = {p[0] for p in paths if len(p) == 1}
    deeper: dict = {}
    for p in paths:
        if len(p) > 1:
            deeper.setdefault(p[0], []).append(p[1:])
    return {k: _without(v, deeper[k]) if k in deeper else v for k, v in state.items() if k not in drop}


def _with(compact, paths, buffers):
    """Inverse of :func:`_without`: put ``buffers[i]`` back at ``paths[i]``, in the rule's own key order."""
    full = tree.tree_map(lambda x: x, compact)  # a structural copy to insert into
    for path, buf in zip(paths, buffers):
        node = full
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = buf
    return full


def select(choices: Sequence[Optimizer], index: int) -> Optimizer:
    """Run ``choices[index]``; state ``{"index": 0-d int64, "buffers": {"0": b0, ...}, "choices": {"0": s0, ...}}``.

    ``choices[i]``'s state minus its buffers is ``state["choices"][str(i)]``; :func:`active_state`
    rebuilds the active rule's full state. Every variant of a population must pass the same rule
    list (same kinds, same order).
    """
    choices = list(choices)
    if not choices:
        raise ValueError("select() needs at least one optimizer in `choices`")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(choices):
        raise ValueError(f"select index = {index!r}: must be an int in [0, {len(choices)}) (one of the "
                         f"{len(choices)} choices)")
    probes = [c.init({_PROBE: torch.ones(1)}) for c in choices]
    paths = [buffer_paths(s) for s in probes]
    n_buffers = max(len(p) for p in paths)
    # Every rule starts its buffers at zero, so one zero set serves them all: checked once, here.
    if any(bool(_get(s, p)[_PROBE].any()) for s, ps in zip(probes, paths) for p in ps):
        raise ValueError("select() shares rules' buffers, so every rule must initialise them to zero")

    def init(params):
        _, device = float_spec(params)
        states = [c.init(params) for c in choices]
        return {"index": torch.tensor(index, dtype=torch.int64, device=device),
                "buffers": {str(j): tree.tree_map(torch.zeros_like, params) for j in range(n_buffers)},
                "choices": {str(i): _without(s, ps) for i, (s, ps) in enumerate(zip(states, paths))}}

    def update(grads, state, params):
        idx, old, bufs = state["index"], state["choices"], state["buffers"]
        updates, new, new_bufs = None, {}, dict(bufs)
        for i, (c, ps) in enumerate(zip(choices, paths)):
            full = _with(old[str(i)], ps, [bufs[str(j)] for j in range(len(ps))])
            u, s = c.update(grads, full, params)
            active = idx == i
            new[str(i)] = tree.where(active, _without(s, ps), old[str(i)])
            for j, p in enumerate(ps):
                new_bufs[str(j)] = tree.where(active, _get(s, p), new_bufs[str(j)])
            updates = u if updates is None else tree.where(active, u, updates)
        return updates, {"index": idx, "buffers": new_bufs, "choices": new}

    update.paths = paths  # for active_state
    return Optimizer(init, update)


def active_state(opt: Optimizer, state):
    """The active rule's full state (buffers put back), as a solo run of that rule holds it.

    ``opt`` is the ``select`` optimizer that made ``state`` (one variant's, not stacked).
    """
    i = int(state["index"])
    ps = opt.update.paths[i]
    return _with(state["choices"][str(i)], ps, [state["buffers"][str(j)] for j in range(len(ps))])


def from_configs(configs: Sequence[OptimizerConfig], room: Sequence[OptimizerConfig] = ()) -> list[Optimizer]:
    """One optimizer per variant, all with the same state structure, so their states stack.

    If every config shares one ``rule`` (name, nesterov, centered) these are plain
    :func:`from_config` optimizers. Otherwise each is ``select`` over the population's rules in
    order of first appearance: its own rule built from its own config, the others from the first
    config using that rule (stand-ins whose values are never used by this variant).

    ``room`` lists configs whose rules the population holds for later (a search over the
    optimizer); their rules come first, so building one member later with the same ``room`` plus
    the population's configs gives the same rule order, and its state stacks with the others'.
    Only ``configs`` get an optimizer back.
    """
    configs, room = list(configs), list(room)
    if not configs:
        raise ValueError("from_configs() needs at least one OptimizerConfig")
    rules = list(dict.fromkeys(c.rule for c in room + configs))
    if len(rules) == 1:
        return [from_config(c) for c in configs]
    stand_in = {r: from_config(next(c for c in room + configs if c.rule == r)) for r in rules}
    return [select([from_config(c) if r == c.rule else stand_in[r] for r in rules], rules.index(c.rule))
            for c in configs]
