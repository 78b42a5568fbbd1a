"""The ResNet basic block (He et al. 2016), with torchvision ``BasicBlock``'s parameter names.

    y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))

``conv1`` carries the stride. The shortcut is the identity, or ``downsample`` (1x1 conv with the
same stride, then BN) when the stride or the channel count changes. Whether a block projects is
read from its parameter names, so it never has to be passed twice.
"""
from __future__ import annotations

import torch

from fer_func import prng, tree
from fer_func.nn.conv import conv2d, conv2d_init
from fer_func.nn.norm import batch_norm, batch_norm_init


def _conv_bn_init(key, in_ch, out_ch, k, conv, bn):
    conv_params = conv2d_init(key, in_ch, out_ch, k, bias=False, init="kaiming")
    bn_params, bn_state = batch_norm_init(out_ch, device=key.device)
    return tree.prefix(conv, conv_params) | tree.prefix(bn, bn_params), tree.prefix(bn, bn_state)


def basic_block_init(key: torch.Tensor, in_channels: int, out_channels: int, *, stride: int = 1
                     ) -> tuple[dict, dict]:
    """``(params, state)`` of one block; convs Kaiming-normal (fan_out, relu), BN weight 1 / bias 0."""
    k1, k2, k3 = prng.split(key, 3)
    p1, s1 = _conv_bn_init(k1, in_channels, out_channels, 3, "conv1", "bn1")
    p2, s2 = _conv_bn_init(k2, out_channels, out_channels, 3, "conv2", "bn2")
    params, state = p1 | p2, s1 | s2
    if stride != 1 or in_channels != out_channels:
        p3, s3 = _conv_bn_init(k3, in_channels, out_channels, 1, "downsample.0", "downsample.1")
        params, state = params | p3, state | s3
    return params, state


def basic_block(params: dict, state: dict, x: torch.Tensor, *, stride: int = 1, train: bool,
                momentum: float = 0.1, eps: float = 1e-5) -> tuple[torch.Tensor, dict]:
    """``x``: (B, in, H, W) -> ``((B, out, H / stride, W / stride), new_state)``."""
    new_state = {}

    def bn(name, y):
        y, s = batch_norm(tree.sub(params, name), tree.sub(state, name), y, train=train,
                          momentum=momentum, eps=eps)
        new_state.update(tree.prefix(name, s))
        return y

    y = torch.relu(bn("bn1", conv2d(tree.sub(params, "conv1"), x, stride=stride)))
    y = bn("bn2", conv2d(tree.sub(params, "conv2"), y))
    if "downsample.0.weight" in params:
        x = bn("downsample.1", conv2d(tree.sub(params, "downsample.0"), x, stride=stride))
    return torch.relu(y + x), new_state
