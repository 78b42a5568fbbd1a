"""One optimizer over several update rules, the active one chosen by a tensor in the state.

A population that mixes SGD, Adam and RMSprop variants still needs one state structure to stack
and one update to vmap. ``select(rules, index)`` holds every rule's state plus ``index`` (int64,
0-d); its update runs every rule and keeps the active one's result with ``torch.where`` (exact:
no arithmetic mixes rules), leaving the inactive rules' states untouched. Cost: each variant pays
for every rule in the list, which is small next to a forward/backward pass.

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


def select(choices: Sequence[Optimizer], index: int) -> Optimizer:
    """Run ``choices[index]``; state ``{"index": 0-d int64, "choices": {"0": s0, "1": s1, ...}}``.

    Every variant of a population must pass the same rule list (same kinds, same order).
    """
    choices = list(choices)
    if not choices:
        raise ValueError("select() needs at least one optimizer in `choices`")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(choices):
        raise ValueError(f"select index = {index!r}: must be an int in [0, {len(choices)}) (one of the "
                         f"{len(choices)} choices)")

    def init(params):
        _, device = float_spec(params)
        return {"index": torch.tensor(index, dtype=torch.int64, device=device),
                "choices": {str(i): c.init(params) for i, c in enumerate(choices)}}

    def update(grads, state, params):
        idx, old = state["index"], state["choices"]
        updates, new = None, {}
        for i, c in enumerate(choices):
            u, s = c.update(grads, old[str(i)], params)
            active = idx == i
            new[str(i)] = tree.where(active, s, old[str(i)])
            updates = u if updates is None else tree.where(active, u, updates)
        return updates, {"index": idx, "choices": new}

    return Optimizer(init, update)


def from_configs(configs: Sequence[OptimizerConfig]) -> list[Optimizer]:
    """One optimizer per variant, all with the same state structure, so their states stack.

    If every config shares one ``rule`` (name, nesterov, centered) these are plain
    :func:`from_config` optimizers. Otherwise each is ``select`` over the population's rules in
    order of first appearance: its own rule built from its own config, the others from the first
    config using that rule (stand-ins whose values are never used by this variant).
    """
    configs = list(configs)
    if not configs:
        raise ValueError("from_configs() needs at least one OptimizerConfig")
    rules = list(dict.fromkeys(c.rule for c in configs))
    if len(rules) == 1:
        return [from_config(c) for c in configs]
    stand_in = {r: from_config(next(c for c in configs if c.rule == r)) for r in rules}
    return [select([from_config(c) if r == c.rule else stand_in[r] for r in rules], rules.index(c.rule))
            for c in configs]
