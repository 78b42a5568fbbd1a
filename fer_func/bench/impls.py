"""The four ways to train K variants for one step, each built on the same data and the same initial weights.

    population           Population(mode="vmap", compile=True): one compiled graph for all K
    population_eager     the same vmapped step, not compiled
    sequential           K torch.nn reference models + K torch.optim.Adam, stepped one after another
                         (what a notebook does)
    sequential_compiled  the same with every model torch.compile'd

``build(impl, setup) -> step(j)``: ``j`` is the micro-step (a python int); every implementation reads
micro-batch ``j`` of the same epoch order ``setup.perm``, so all of them see identical inputs.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from fer_func import prng
from fer_func.config import ModelConfig, OptimizerConfig, VariantConfig
from fer_func.data.dataset import FERData
from fer_func.population import Population
from fer_func.population.step import MEAN, STD
from fer_func.bench.torch_loop import initial_module
from fer_func.population.step import DATA_STREAM

IMPLS = ("sequential", "sequential_compiled", "population_eager", "population")


@dataclass
class Setup:
    """What every implementation of one (model, K, batch) measurement shares."""
    model: str
    k: int
    batch: int
    data: FERData
    device: torch.device
    channels_last: bool = False   # sequential impls only: the population's layout is decided inside vmap
    distinct_seeds: bool = False  # False: a study grid (one seed, K learning rates); True: K replicate seeds

    def variants(self) -> list[VariantConfig]:
        # A study grid differs only in hyperparameters: one seed, so one init and one data order
        # (the population then gathers each batch once); replicate seeds give every variant its own.
        return [VariantConfig(model=ModelConfig(self.model), optimizer=OptimizerConfig(name="adam", lr=1e-3 * (1 + i / 8)),
                              batch_size=self.batch, seed=i if self.distinct_seeds else 0, epochs=1)
                for i in range(self.k)]

    @functools.cached_property
    def perm(self) -> torch.Tensor:
        """(K, N) epoch-0 data order of every variant, exactly as ``Population.epoch_order(0)`` draws it."""
        n = self.data.split("train")[1].shape[0]
        keys = [prng.fold_in(prng.fold_in(prng.key(v.seed), DATA_STREAM), 0) for v in self.variants()]
        return torch.stack([prng.permutation(k, n) for k in keys]).to(self.device)


def _population(setup: Setup, compile: bool):
    pop = Population(setup.variants(), setup.data, device=setup.device, compile=compile, mode="vmap")
    perm = pop.epoch_order(0)
    if not torch.equal(perm, setup.perm):
        raise AssertionError("the population's data order differs from Setup.perm; the comparison would be unfair")
    js = torch.arange(pop.plan.steps_per_epoch, device=setup.device)  # 0-d int64 tensors: no recompile per j
    return lambda j: pop.step(perm, js[j % len(js)])


def _sequential(setup: Setup, compile: bool):
    """K reference modules with the population's initial weights, K Adams, on the population's batches."""
    x_all, y_all = setup.data.to(setup.device).split("train")
    fmt = torch.channels_last if setup.channels_last else torch.contiguous_format
    nets, opts = [], []
    for v in setup.variants():
        net = initial_module(v, setup.device).to(memory_format=fmt).train()
        opts.append(torch.optim.Adam(net.parameters(), lr=v.optimizer.lr))
        nets.append(torch.compile(net) if compile else net)
    perm, n_steps = setup.perm, x_all.shape[0] // setup.batch

    def step(j: int):
        s = (j % n_steps) * setup.batch
        for i, (net, opt) in enumerate(zip(nets, opts)):
            idx = perm[i, s:s + setup.batch]
            x = ((x_all[idx].unsqueeze(1).float() / 255.0 - MEAN) / STD).contiguous(memory_format=fmt)  # (B, 1, 48, 48)
            loss = F.cross_entropy(net(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return step


def build(impl: str, setup: Setup) -> Callable[[int], None]:
    """``step(j)`` of implementation ``impl``: trains all K variants on micro-batch ``j`` of ``setup.perm``."""
    if impl in ("population", "population_eager"):
        return _population(setup, compile=impl == "population")
    if impl in ("sequential", "sequential_compiled"):
        return _sequential(setup, compile=impl == "sequential_compiled")
    raise ValueError(f"impl = {impl!r}: choose one of {', '.join(IMPLS)}")
