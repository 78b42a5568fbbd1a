"""Inverted dropout with an explicit key.

The mask comes from ``fer_func.prng``: the same key gives the same mask eagerly, compiled, on any
device, alone or inside ``vmap`` (a stack of keys gives one mask per variant), and in any dtype.
``rate`` may be a 0-d tensor, so a population can give each variant its own rate in one graph.

An element is kept when a 16-bit random word is >= ``ceil(65536 * rate)``, so the keep
probability is ``1 - ceil(65536 * rate) / 65536`` (0.79999 for rate 0.2, exact for 0.5). 16-bit
words come four to a Threefry block (``prng.bits16``): in a compiled regularized_cnn step the
cipher work for the masks (forward, and recomputed in the backward) was the largest cost after
the convolutions; 16-bit words cut that cipher work by drawing more mask elements per block.
"""
from __future__ import annotations

import math

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
    threshold = math.ceil(rate * 65536) if not torch.is_tensor(rate) else torch.ceil(rate * 65536).to(torch.int64)
    keep = prng.bits16(key, x.shape) >= threshold
    return x * keep / (1 - rate)
