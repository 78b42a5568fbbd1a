"""Inverted dropout with an explicit key.

The mask comes from ``fer_func.prng``: the same key gives the same mask eagerly, compiled, on any
device, alone or inside ``vmap`` (a stack of keys gives one mask per variant). The mask is drawn in
float32 whatever ``x``'s dtype, so a float64 check sees the mask a float32 run sees.
``rate`` may be a 0-d tensor, so a population can give each variant its own rate in one graph.
"""
from __future__ import annotations

import torch

from fer_func import prng


def dropout(x: torch.Tensor, rate, *, key: torch.Tensor | None, train: bool) -> torch.Tensor:
    """Zero each element with probability ``rate`` and scale survivors by ``1 / (1 - rate)``.

    ``rate`` is a python float in [0, 1) or a 0-d tensor (validated by the config, not here, since
    a batched tensor has no single value to check). Identity when ``train`` is False.
    """
    if not train:
        return x
    if not torch.is_tensor(rate):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate = {rate!r} must be in [0, 1)")
        if rate == 0.0:
            return x  # a python zero is known to be a no-op; skipping it saves a mask draw
    if key is None:
        raise ValueError(f"dropout(train=True, rate={rate!r}) needs key=...; pass a fer_func.prng key "
                         f"(split one per dropout layer and step)")
    keep = prng.uniform(key, x.shape) >= rate
    return x * keep / (1 - rate)
