"""Fully connected layer: ``y = x W^T + b`` with ``nn.Linear``'s parameter names and shapes.

Every linear layer of every model goes through :func:`linear`, so its implementation can be
swapped in one place (under ``vmap`` over a population it becomes a batched matmul).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fer_func.nn.init import weight_and_bias


def linear_init(key: torch.Tensor, in_features: int, out_features: int, *, bias: bool = True,
                init: str = "torch") -> dict:
    """``{"weight": (out_features, in_features), "bias": (out_features,)}``."""
    return weight_and_bias(key, (out_features, in_features), bias=bias, init=init)


def linear(params: dict, x: torch.Tensor) -> torch.Tensor:
    """``x``: (B, in_features) -> (B, out_features)."""
    return F.linear(x, params["weight"], params.get("bias"))
