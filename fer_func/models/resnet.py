"""``resnet`` (experiment 06): ResNet-18 for 48px grayscale faces.

    conv3x3(stem) -> BN -> ReLU -> stages of basic blocks -> global average pool -> linear 7

torchvision's ``resnet18`` with the ImageNet stem (7x7 stride-2 conv + max-pool, which would shrink
a 48px face to 12px before the first block) replaced by one 3x3 stride-1 conv. The first stage keeps
the resolution, each later stage halves it (48 -> 48 -> 24 -> 12 -> 6). Parameter names follow
torchvision (``layer2.0.downsample.0.weight``), and so does the init: convs Kaiming-normal
(fan_out, relu), BN weight 1 / bias 0, the final linear torch's default.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fer_func import nn as layers
from fer_func import prng, tree
from fer_func.models.base import INPUT_SHAPE, NUM_CLASSES, Model, check_knob, check_widths


@dataclass(frozen=True)
class ResNet(Model):
    stem: int                  # channels of the 3x3 stem conv
    stages: tuple[int, ...]    # width of each stage; stages after the first start with stride 2
    blocks: int                # basic blocks per stage

    def __post_init__(self):
        check_knob(isinstance(self.stem, int) and self.stem > 0, self.name, "stem", self.stem,
                   "must be a positive integer")
        check_widths(self.name, "stages", self.stages)
        check_knob(len(self.stages) <= 5, self.name, "stages", self.stages,
                   "at most 5 stages fit a 48px image (each after the first halves it)")
        check_knob(isinstance(self.blocks, int) and self.blocks >= 1, self.name, "blocks", self.blocks,
                   "must be a positive integer")

    def _blocks(self):
        """``(name, in_channels, out_channels, stride)`` of every basic block, in order."""
        c = self.stem
        for s, width in enumerate(self.stages, 1):
            for b in range(self.blocks):
                yield f"layer{s}.{b}", c, width, (2 if s > 1 and b == 0 else 1)
                c = width

    def init(self, key):
        blocks = list(self._blocks())
        k_stem, k_fc, *k_blocks = prng.split(key, 2 + len(blocks))
        params = tree.prefix("conv1", layers.conv2d_init(k_stem, INPUT_SHAPE[0], self.stem, 3, bias=False,
                                                         init="kaiming"))
        bn_params, state = layers.batch_norm_init(self.stem, device=key.device)
        params, state = params | tree.prefix("bn1", bn_params), tree.prefix("bn1", state)
        for k, (name, c_in, c_out, stride) in zip(k_blocks, blocks):
            p, s = layers.basic_block_init(k, c_in, c_out, stride=stride)
            params, state = params | tree.prefix(name, p), state | tree.prefix(name, s)
        params |= tree.prefix("fc", layers.linear_init(k_fc, self.stages[-1], NUM_CLASSES))
        return params, state

    def apply(self, params, state, x, *, key=None, train, dropout=None):
        self._check_input(x)
        self._dropout_rates(dropout)  # rejects overrides: this family has no dropout
        x = layers.conv2d(tree.sub(params, "conv1"), x)
        x, s = layers.batch_norm(tree.sub(params, "bn1"), tree.sub(state, "bn1"), x, train=train)
        x, new_state = torch.relu(x), tree.prefix("bn1", s)
        for name, _, _, stride in self._blocks():
            x, s = layers.basic_block(tree.sub(params, name), tree.sub(state, name), x, stride=stride, train=train)
            new_state |= tree.prefix(name, s)
        return layers.linear(tree.sub(params, "fc"), layers.global_avg_pool(x)), new_state

    def reference(self):
        return ResNetModule(self)


class ResNetModule(nn.Module):
    """The torch.nn twin of :class:`ResNet`, built from torchvision's own ``BasicBlock``."""

    def __init__(self, m: ResNet):
        # Imported here, not at module level: torchvision's import (slow next to a short command) would otherwise
        # be paid by every command that imports fer_func.models, and only this reference module needs it.
        from torchvision.models.resnet import BasicBlock, conv1x1
        super().__init__()
        self.conv1 = nn.Conv2d(INPUT_SHAPE[0], m.stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m.stem)
        self.relu = nn.ReLU(inplace=True)
        c = m.stem
        for s, width in enumerate(m.stages, 1):
            blocks = []
            for b in range(m.blocks):
                stride = 2 if s > 1 and b == 0 else 1
                down = None
                if stride != 1 or c != width:
                    down = nn.Sequential(conv1x1(c, width, stride), nn.BatchNorm2d(width))
                blocks.append(BasicBlock(c, width, stride, down))
                c = width
            self.add_module(f"layer{s}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, NUM_CLASSES)
        self.num_stages = len(m.stages)
        for mod in self.modules():  # torchvision.models.ResNet's init
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.constant_(mod.weight, 1)
                nn.init.constant_(mod.bias, 0)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for s in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{s}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))
