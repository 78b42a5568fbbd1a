"""Pooling: non-overlapping max pooling and global average pooling (no parameters)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def max_pool2d(x: torch.Tensor, k: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H // k, W // k), as ``nn.MaxPool2d(k)`` (odd edges are dropped)."""
    return F.max_pool2d(x, k)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C): ``nn.AdaptiveAvgPool2d(1)`` followed by ``flatten(1)``."""
    return x.mean(dim=(-2, -1))
