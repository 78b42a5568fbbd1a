"""``mlp`` (experiment 01): flatten the 48x48 image and classify it with fully connected layers.

    flatten 2304 -> [linear -> ReLU -> dropout] x len(hidden) -> linear 7
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from fer_func import nn as layers
from fer_func import prng, tree
from fer_func.models.base import INPUT_SHAPE, NUM_CLASSES, Model, check_rate, check_widths


@dataclass(frozen=True)
class MLP(Model):
    hidden: tuple[int, ...]   # hidden widths (may be empty: logistic regression on pixels)
    dropout: float            # after every hidden ReLU

    def __post_init__(self):
        check_widths(self.name, "hidden", self.hidden, allow_empty=True)
        check_rate(self.name, "dropout", self.dropout)

    @property
    def dropout_knobs(self) -> tuple[str, ...]:
        return ("dropout",)

    def _linears(self):
        """``(name, in_features, out_features)`` of every linear, the output layer last."""
        widths = (math.prod(INPUT_SHAPE), *self.hidden, NUM_CLASSES)
        names = [f"fc{i}" for i in range(1, len(self.hidden) + 1)] + ["out"]
        return list(zip(names, widths[:-1], widths[1:]))

    def init(self, key):
        linears = self._linears()
        params = {}
        for k, (name, n_in, n_out) in zip(prng.split(key, len(linears)), linears):
            params |= tree.prefix(name, layers.linear_init(k, n_in, n_out))
        return params, {}

    def apply(self, params, state, x, *, key=None, train, dropout=None):
        self._check_input(x)
        rate = self._dropout_rates(dropout)["dropout"]
        keys = self._dropout_keys(key, train, {"dropout": rate}, len(self.hidden))
        x = x.flatten(1)  # (B, 2304)
        *hidden, (out, _, _) = self._linears()
        for (name, _, _), k in zip(hidden, keys):
            x = torch.relu(layers.linear(tree.sub(params, name), x))
            x = layers.dropout(x, rate, key=k, train=train)
        return layers.linear(tree.sub(params, out), x), state

    def reference(self):
        net, n = OrderedDict(flatten=nn.Flatten()), math.prod(INPUT_SHAPE)
        for i, width in enumerate(self.hidden, 1):
            net[f"fc{i}"], net[f"relu{i}"], net[f"drop{i}"] = nn.Linear(n, width), nn.ReLU(), nn.Dropout(self.dropout)
            n = width
        net["out"] = nn.Linear(n, NUM_CLASSES)
        return nn.Sequential(net)
