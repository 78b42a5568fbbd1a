"""Weight initializers drawn from explicit ``fer_func.prng`` keys.

Same distributions as torch's defaults, different bits: a model initialised here is *distributed*
like its ``torch.nn`` reference, and bit-identical to itself on any device, alone or in a population.

- ``"torch"``: what ``nn.Linear``/``nn.Conv2d`` do on construction. ``kaiming_uniform_(a=sqrt(5))``
  reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight, and the bias uses the same bound.
- ``"kaiming"``: ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``, N(0, 2/fan_out), with a
  zero bias: torchvision's ResNet initialisation.
"""
from __future__ import annotations

import math

import torch

from fer_func import prng

INITS = ("torch", "kaiming")


def fans(shape: tuple) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape`` (out, in, *kernel), as torch computes them."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def weight_and_bias(key: torch.Tensor, shape: tuple, *, bias: bool, init: str) -> dict:
    """``{"weight": (out, in, *kernel), "bias": (out,)}`` in float32 on ``key``'s device."""
    if init not in INITS:
        raise ValueError(f"init = {init!r} is not an initializer; choose one of {', '.join(INITS)}")
    wkey, bkey = prng.split(key)
    fan_in, fan_out = fans(shape)
    if init == "torch":
        bound = 1.0 / math.sqrt(fan_in)
        params = {"weight": prng.uniform(wkey, shape, low=-bound, high=bound)}
        if bias:
            params["bias"] = prng.uniform(bkey, shape[:1], low=-bound, high=bound)
    else:
        params = {"weight": math.sqrt(2.0 / fan_out) * prng.normal(wkey, shape)}
        if bias:
            params["bias"] = torch.zeros(shape[0], device=key.device)
    return params
