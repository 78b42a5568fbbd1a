"""VGG-style conv nets: ``simple_cnn``, ``large_cnn``, ``regularized_cnn`` and ``tiny_cnn`` are presets of one family.

    block b (x len(channels)):  [conv3x3 -> (BN) -> ReLU] x convs_per_block -> maxpool 2 -> (dropout_conv)
    head:                        flatten -> [linear -> ReLU -> (dropout_fc)] x len(fc) -> linear 7

Every block halves the 48px image (48 -> 24 -> 12 -> 6 -> 3 -> 1), so at most five blocks fit.
A dropout knob that is ``None`` means the family has no such dropout layer at all; a float (even
0.0) means the layer exists, so a population can switch it on with a tensor rate.
Convs followed by BN have no bias (BN's shift makes it redundant).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from fer_func import nn as layers
from fer_func import prng, tree
from fer_func.models.base import INPUT_SHAPE, NUM_CLASSES, Model, check_knob, check_rate, check_widths


@dataclass(frozen=True)
class ConvNet(Model):
    channels: tuple[int, ...]      # output channels of each block
    convs_per_block: int           # 3x3 convs per block, all with the block's width
    fc: tuple[int, ...]            # hidden widths of the head (may be empty)
    batch_norm: bool = False       # BN after every conv (regularized_cnn)
    dropout_conv: float | None = None  # after each block's pool; None = no such layer
    dropout_fc: float | None = None    # after each hidden linear's ReLU; None = no such layer

    def __post_init__(self):
        check_widths(self.name, "channels", self.channels)
        check_knob(len(self.channels) <= 5, self.name, "channels", self.channels,
                   "at most 5 blocks fit a 48px image (each halves it: 48 -> 24 -> 12 -> 6 -> 3 -> 1)")
        check_knob(isinstance(self.convs_per_block, int) and self.convs_per_block >= 1, self.name,
                   "convs_per_block", self.convs_per_block, "must be a positive integer")
        check_widths(self.name, "fc", self.fc, allow_empty=True)
        for knob in self.dropout_knobs:
            check_rate(self.name, knob, getattr(self, knob))

    @property
    def dropout_knobs(self) -> tuple[str, ...]:
        return tuple(k for k in ("dropout_conv", "dropout_fc") if getattr(self, k) is not None)

    @property
    def flat_features(self) -> int:
        side = INPUT_SHAPE[-1] // 2 ** len(self.channels)
        return self.channels[-1] * side * side

    def _convs(self):
        """``(block, j, in_channels, out_channels)`` of every conv, in order."""
        c = INPUT_SHAPE[0]
        for b, width in enumerate(self.channels):
            for j in range(1, self.convs_per_block + 1):
                yield b, j, c, width
                c = width

    def _linears(self):
        """``(name, in_features, out_features)`` of every linear, the output layer last."""
        widths = (self.flat_features, *self.fc, NUM_CLASSES)
        names = [f"classifier.fc{i}" for i in range(1, len(self.fc) + 1)] + ["classifier.out"]
        return list(zip(names, widths[:-1], widths[1:]))

    def init(self, key):
        convs, linears = list(self._convs()), self._linears()
        keys = prng.split(key, len(convs) + len(linears))
        params, state = {}, {}
        for k, (b, j, c_in, c_out) in zip(keys, convs):
            params |= tree.prefix(f"features.{b}.conv{j}",
                                  layers.conv2d_init(k, c_in, c_out, 3, bias=not self.batch_norm))
            if self.batch_norm:
                bn_params, bn_state = layers.batch_norm_init(c_out, device=key.device)
                params |= tree.prefix(f"features.{b}.bn{j}", bn_params)
                state |= tree.prefix(f"features.{b}.bn{j}", bn_state)
        for k, (name, n_in, n_out) in zip(keys[len(convs):], linears):
            params |= tree.prefix(name, layers.linear_init(k, n_in, n_out))
        return params, state

    def apply(self, params, state, x, *, key=None, train, dropout=None):
        self._check_input(x)
        rates = self._dropout_rates(dropout)
        n_sites = len(self.channels) * (self.dropout_conv is not None) + len(self.fc) * (self.dropout_fc is not None)
        keys = iter(self._dropout_keys(key, train, rates, n_sites))
        new_state = {}
        for b in range(len(self.channels)):
            for j in range(1, self.convs_per_block + 1):
                x = layers.conv2d(tree.sub(params, f"features.{b}.conv{j}"), x)
                if self.batch_norm:
                    bn = f"features.{b}.bn{j}"
                    x, s = layers.batch_norm(tree.sub(params, bn), tree.sub(state, bn), x, train=train)
                    new_state |= tree.prefix(bn, s)
                x = torch.relu(x)
            x = layers.max_pool2d(x)
            if self.dropout_conv is not None:
                x = layers.dropout(x, rates["dropout_conv"], key=next(keys), train=train)
        x = x.flatten(1)  # (B, C * H * W)
        *hidden, (out, _, _) = self._linears()
        for name, _, _ in hidden:
            x = torch.relu(layers.linear(tree.sub(params, name), x))
            if self.dropout_fc is not None:
                x = layers.dropout(x, rates["dropout_fc"], key=next(keys), train=train)
        return layers.linear(tree.sub(params, out), x), new_state

    def reference(self):
        return ConvNetModule(self)


class ConvNetModule(nn.Module):
    """The torch.nn twin of :class:`ConvNet`, written the way a notebook would write it."""

    def __init__(self, m: ConvNet):
        super().__init__()
        blocks, c = [], INPUT_SHAPE[0]
        for width in m.channels:
            block = OrderedDict()
            for j in range(1, m.convs_per_block + 1):
                block[f"conv{j}"] = nn.Conv2d(c, width, 3, padding=1, bias=not m.batch_norm)
                if m.batch_norm:
                    block[f"bn{j}"] = nn.BatchNorm2d(width)
                block[f"relu{j}"] = nn.ReLU()
                c = width
            block["pool"] = nn.MaxPool2d(2)
            if m.dropout_conv is not None:
                block["drop"] = nn.Dropout(m.dropout_conv)
            blocks.append(nn.Sequential(block))
        self.features = nn.Sequential(*blocks)
        head, n = OrderedDict(flatten=nn.Flatten()), m.flat_features
        for i, width in enumerate(m.fc, 1):
            head[f"fc{i}"], head[f"relu{i}"] = nn.Linear(n, width), nn.ReLU()
            if m.dropout_fc is not None:
                head[f"drop{i}"] = nn.Dropout(m.dropout_fc)
            n = width
        head["out"] = nn.Linear(n, NUM_CLASSES)
        self.classifier = nn.Sequential(head)

    def forward(self, x):
        return self.classifier(self.features(x))
