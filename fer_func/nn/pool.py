"""Pooling: non-overlapping 2x2 max pooling and global average pooling (no parameters).

``max_pool2d`` is ATen's ``F.max_pool2d``, so values, NaN propagation and gradients (to the first
maximum of each window) are ``nn.MaxPool2d(2)``'s by construction. It used to be a chain of
``torch.where`` over the four strided views, which inductor fuses into its neighbours; but its
backward, four strided ``slice_backward`` scatters, compiles to scalar C++ with an integer division
per element. Once a population's CPU programs keep the graph's own layout (compile/program.py),
ATen's pooling is the faster of the two for the lr population's step (measured A/B, the two
alternating). Under inductor's channels-last layout the where-chain had been the faster.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def max_pool2d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H // 2, W // 2), as ``nn.MaxPool2d(2)`` (odd edges are dropped)."""
    return F.max_pool2d(x, 2)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C): ``nn.AdaptiveAvgPool2d(1)`` followed by ``flatten(1)``."""
    return x.mean(dim=(-2, -1))
