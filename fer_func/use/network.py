"""The exported network: one or more ``torch.nn`` reference modules behind the training normalisation.

    Classifier(nets)(x) : (N, 1, 48, 48) float in [0, 1] -> (N, 7) logits

With one net the logits are that net's, bit for bit what ``model.apply`` gives on normalised input.
With K nets (an ensemble) they are ``log(mean_k softmax(logits_k))``: softmax of them is the averaged
probability, so a caller treats a single net and an ensemble alike (softmax, argmax).
The nets are the families' own ``reference()`` modules, so a state_dict export loads into
``model.reference()`` with no renaming, and TorchScript/ONNX see plain ``torch.nn`` layers.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fer_func import prng
from fer_func.config import ModelConfig
from fer_func.models import build_from
from fer_func.models.base import INPUT_SHAPE
from fer_func.population.step import MEAN, STD


class Classifier(nn.Module):
    def __init__(self, nets: list[nn.Module]):
        super().__init__()
        assert len(nets) >= 1, "a Classifier needs at least one net"
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - MEAN) / STD  # the training normalisation (fer_func/population/step.py)
        if len(self.nets) == 1:
            return self.nets[0](x)
        logp = torch.stack([net(x).log_softmax(-1) for net in self.nets])  # (K, N, 7)
        # log of the mean probability, computed stably in log space
        return logp.logsumexp(0) - math.log(len(self.nets))


def as_float32(sd: dict) -> dict:
    """Float tensors as float32 (a float64 run exports like any other); BN's int64 counter stays as it is."""
    return {k: v.detach().to(torch.float32) if v.is_floating_point() else v.detach() for k, v in sd.items()}


def build(model: ModelConfig, state_dicts: list[dict]) -> Classifier:
    """A Classifier in eval mode from the architecture and one reference ``state_dict`` per net."""
    nets = []
    for sd in state_dicts:
        net = build_from(model).reference()
        net.load_state_dict(sd)
        nets.append(net)
    return Classifier(nets).eval()


def example_input(n: int = 2) -> torch.Tensor:
    """A batch in the exported input format, for tracing and export: (n, 1, 48, 48) float in [0, 1]."""
    return prng.uniform(prng.key(0), (n, *INPUT_SHAPE))  # the project's keyed RNG: no global state
