"""2-D convolution with ``nn.Conv2d``'s parameter names and shapes.

This is the *single* convolution entry point of fer-func: every model routes every conv through
:func:`conv2d`. Under ``torch.func.vmap`` over a population, a conv whose weights carry a variant
axis is lowered by torch to one grouped convolution (K groups); if another lowering proves faster
(e.g. an explicit ``groups=K`` reshape, or a loop over variants), it is changed here and nowhere else.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fer_func.nn.init import weight_and_bias


def conv2d_init(key: torch.Tensor, in_channels: int, out_channels: int, kernel_size: int, *,
                bias: bool = True, init: str = "torch") -> dict:
    """``{"weight": (out, in, k, k), "bias": (out,)}``; ``bias=False`` when a BatchNorm follows."""
    shape = (out_channels, in_channels, kernel_size, kernel_size)
    return weight_and_bias(key, shape, bias=bias, init=init)


def conv2d(params: dict, x: torch.Tensor, *, stride: int = 1, padding: int | None = None) -> torch.Tensor:
    """``x``: (B, in, H, W) -> (B, out, H', W'). ``padding`` defaults to ``k // 2`` ("same" at stride 1)."""
    weight = params["weight"]
    if padding is None:
        padding = weight.shape[-1] // 2
    return F.conv2d(x, weight, params.get("bias"), stride=stride, padding=padding)
