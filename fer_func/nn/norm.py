"""Batch normalisation as a pure function: running statistics go in as ``state`` and come back out.

Semantics are exactly ``nn.BatchNorm2d`` (``F.batch_norm``): in training the batch is normalised
with its own mean and *biased* variance, while the running variance is updated with the *unbiased*
one, ``running = (1 - momentum) * running + momentum * batch``, and ``num_batches_tracked`` counts
up by one. In evaluation the running statistics normalise. Nothing is written in place, so the
function works under ``vmap`` (one set of statistics per variant), ``grad`` and ``torch.compile``.
"""
from __future__ import annotations

import torch


def batch_norm_init(num_features: int, *, device=None) -> tuple[dict, dict]:
    """``(params, state)`` with ``nn.BatchNorm2d``'s names: weight 1, bias 0, mean 0, var 1, count 0."""
    params = {"weight": torch.ones(num_features, device=device),
              "bias": torch.zeros(num_features, device=device)}
    state = {"running_mean": torch.zeros(num_features, device=device),
             "running_var": torch.ones(num_features, device=device),
             "num_batches_tracked": torch.zeros((), dtype=torch.int64, device=device)}
    return params, state


def batch_norm(params: dict, state: dict, x: torch.Tensor, *, train: bool, momentum: float = 0.1,
               eps: float = 1e-5) -> tuple[torch.Tensor, dict]:
    """``x``: (B, C, *spatial) -> ``(y, new_state)``; ``new_state is state`` in evaluation."""
    shape = (-1,) + (1,) * (x.ndim - 2)  # broadcast per-channel (C,) over (B, C, *spatial)
    if train:
        n = x.numel() // x.shape[1]
        if n < 2:
            raise ValueError(f"batch_norm(train=True) needs more than 1 value per channel, got input "
                             f"shape {tuple(x.shape)}; use a larger batch or train=False")
        var, mean = torch.var_mean(x, dim=(0, *range(2, x.ndim)), correction=0)
        # Running statistics are bookkeeping, not part of the differentiated computation.
        new_state = {
            "running_mean": (1 - momentum) * state["running_mean"] + momentum * mean.detach(),
            "running_var": (1 - momentum) * state["running_var"] + momentum * var.detach() * (n / (n - 1)),
            "num_batches_tracked": state["num_batches_tracked"] + 1,
        }
    else:
        mean, var, new_state = state["running_mean"], state["running_var"], state
    y = (x - mean.reshape(shape)) * torch.rsqrt(var + eps).reshape(shape)
    return y * params["weight"].reshape(shape) + params["bias"].reshape(shape), new_state
