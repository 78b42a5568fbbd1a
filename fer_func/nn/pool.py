"""Pooling: non-overlapping 2x2 max pooling and global average pooling (no parameters).

``max_pool2d`` picks each window's maximum with a chain of ``torch.where`` over the four strided
views instead of calling ``F.max_pool2d``. Values and gradients are exactly ``nn.MaxPool2d(2)``'s
(the gradient goes to the first maximum in row-major window order, as ATen's kernel does), but
it is plain elementwise code: under ``torch.compile`` the forward and backward each fuse into one
pass with their neighbours, where ATen's version stores int64 argmax indices (twice the bytes of
the activation) and scatters the gradient back through them. On a compiled simple_cnn population
on CPU the where-chain step took 363 ms against 428 ms with ATen's pooling (docs/bench.md).
"""
from __future__ import annotations

import torch


def max_pool2d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H // 2, W // 2), as ``nn.MaxPool2d(2)`` (odd edges are dropped)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    views = [x[..., i:h:2, j:w:2] for i in (0, 1) for j in (0, 1)]  # window positions, row-major
    with torch.no_grad():
        top = torch.maximum(torch.maximum(views[0], views[1]), torch.maximum(views[2], views[3]))
    # First maximum wins, as in ATen; a NaN anywhere in the window matches nothing and falls
    # through to ``top`` (NaN), so a NaN still propagates to the loss and flags divergence.
    out = top
    for v in reversed(views):
        out = torch.where(v.detach() == top, v, out)
    return out


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C): ``nn.AdaptiveAvgPool2d(1)`` followed by ``flatten(1)``."""
    return x.mean(dim=(-2, -1))
