"""Search spaces: an experiment's ``search`` table -> Optuna distributions and the variants they make.

    [experiments.regularized_cnn.search]
    method = "tpe"                                   # tpe | random | pbt (options: OPTIONS below)
    optimizer.lr = { loguniform = [1e-4, 1e-1] }
    optimizer.weight_decay = { loguniform = [1e-5, 1e-2] }
    model.knobs.dropout_fc = { uniform = [0.0, 0.6] }
    optimizer.name = { choice = ["adam", "sgd", "rmsprop", "adamw"] }
    schedule.patience = { int = [1, 4] }

A setting may be searched only if a population can change it in a slot without recompiling: the
numbers that are tensors in the step (optimizer and schedule values, dropout rates), the
optimizer among the population's rules, and the per-variant switches (augmentation on/off, class
weighting). Anything structural (model family and widths, batch size, epochs, seed, augmentation
strengths, nesterov/centered) is rejected by name. Every mistake is one ConfigError naming the key.

It lives with the study code because a [search] table is part of the experiments file, checked when the file
loads (experiments.py); fer_func/search builds its drivers on it. Optuna is imported only for a distribution.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import numpy as np

from fer_func.config import ConfigError, VariantConfig
from fer_func.study.tables import _put, parse_variant

if TYPE_CHECKING:
    import optuna

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
METHODS = ("tpe", "random", "pbt")
PRUNERS = ("hyperband", "successive_halving", "median", "none")
# Search options (not settings), with their defaults: what each one is for.
OPTIONS = {
    "method": "tpe",            # tpe | random (Optuna samplers, pruned trials in slots) | pbt
    "trials": 0,                # Optuna: trials in the budget (0: --trials must give it)
    "k": 0,                     # slots trained at once (0: --k must give it)
    "pruner": "hyperband",      # Optuna: hyperband | successive_halving | median | none
    "reduction_factor": 3,      # hyperband, successive_halving: keep the top 1/eta at each rung
    "median_startup_trials": 5,  # median: trials that finish before it prunes anything (Optuna's n_startup_trials)
    "median_warmup_epochs": 0,  # median: a trial's first epochs are never pruned (Optuna's n_warmup_steps)
    "n_startup_trials": 10,     # tpe: random trials before TPE models the results (Optuna's default, 10)
    "interval": 1,              # pbt: epochs between ready points
    "quantile": 0.25,           # pbt: the bottom quantile copies the top quantile
    "resample": 0.25,           # pbt: probability that explore resamples a value instead of perturbing it
    "perturb": [0.8, 1.2],      # pbt: factors a numeric value is multiplied by (one chosen at random)
}
# Settings a slot can change in place (tensors or masks in the compiled step).
_FLOAT_OPTIMIZER = ("lr", "weight_decay", "momentum", "dampening", "beta1", "beta2", "eps", "alpha")
_SWITCHES = ("augment.enabled", "class_weighted")


def searchable(key: str) -> bool:
    words = key.split(".")
    if words[0] == "optimizer":
        return len(words) == 2 and (words[1] in _FLOAT_OPTIMIZER or words[1] == "name")
    if words[0] == "schedule":
        return len(words) == 2
    if words[:2] == ["model", "knobs"]:
        return len(words) == 3 and words[2].startswith("dropout")
    return key in _SWITCHES


@dataclass(frozen=True)
class Param:
    key: str                 # dotted setting, e.g. "optimizer.lr"; also the Optuna parameter name
    kind: str                # one of DISTRIBUTIONS
    values: tuple            # (low, high) or the choices

    @property
    def distribution(self) -> optuna.distributions.BaseDistribution:
        import optuna  # here: the rest of this module (parsing a [search] table) needs no Optuna

        d = optuna.distributions
        if self.kind == "choice":
            return d.CategoricalDistribution(list(self.values))
        if self.kind == "int":
            return d.IntDistribution(*self.values)
        return d.FloatDistribution(*self.values, log=self.kind == "loguniform")

    def sample(self, rng: np.random.Generator):
        """A uniform draw (log-uniform for ``loguniform``): PBT's initial population and its resampling."""
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        low, high = self.values
        if self.kind == "int":
            return int(rng.integers(low, high + 1))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(low), math.log(high))))
        return float(rng.uniform(low, high))

    def perturb(self, value, factor: float):
        """``value * factor`` kept inside the range (ints rounded and moved at least one step)."""
        low, high = self.values
        if self.kind == "int":
            moved = int(round(value * factor))
            if moved == value:
                moved = value + (1 if factor > 1 else -1)
            return int(min(max(moved, low), high))
        return float(min(max(value * factor, low), high))


@dataclass(frozen=True)
class Space:
    experiment: str
    params: tuple            # of Param, in file order
    options: dict = field(default_factory=dict)

    @property
    def distributions(self) -> dict:
        return {p.key: p.distribution for p in self.params}

    def option(self, name: str):
        return self.options.get(name, OPTIONS[name])


def parse(where: str, table) -> Space:
    """The raw ``search`` table of an experiment -> a checked :class:`Space` (values not yet tried)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: search = {table!r}: must be a table of setting = {{ distribution = ... }}")
    options, params = {}, []
    for key, spec in _flatten(where, table):
        if key in OPTIONS:
            options[key] = _option(where, key, spec)
        elif "." not in key and not isinstance(spec, dict):  # a misspelt option: a setting takes a distribution
            raise ConfigError(f"{where}: search.{key}: unknown search option; options are {', '.join(OPTIONS)}, "
                              f"settings are dotted paths such as optimizer.lr")
        else:
            params.append(_param(where, key, spec))
    if not params:
        raise ConfigError(f"{where}: search has no settings to search; add e.g. "
                          f"optimizer.lr = {{ loguniform = [1e-4, 1e-1] }}")
    return Space(experiment=where, params=tuple(params), options=options)


def _flatten(where: str, table: dict, prefix: str = ""):
    # TOML turns `optimizer.lr = {loguniform = [...]}` into {"optimizer": {"lr": {...}}}: a table
    # holding one distribution name ends a path; an option ends it at the top level.
    for k, v in table.items():
        key = prefix + k
        if not prefix and k in OPTIONS:
            yield key, v
        elif isinstance(v, dict) and not (set(v) & set(DISTRIBUTIONS)) and v and not _looks_like_spec(v):
            yield from _flatten(where, v, key + ".")
        else:
            yield key, v


def _looks_like_spec(v: dict) -> bool:
    # A table whose values are lists is a (possibly misspelt) distribution, not a deeper setting path.
    return all(isinstance(x, list) for x in v.values())


def _option(where: str, key: str, value):
    if key == "method":
        if value not in METHODS:
            raise ConfigError(f"{where}: search.method = {value!r}: choose one of {', '.join(METHODS)}")
    elif key == "pruner":
        if value not in PRUNERS:
            raise ConfigError(f"{where}: search.pruner = {value!r}: choose one of {', '.join(PRUNERS)}")
    elif key == "perturb":
        if not (isinstance(value, list) and value and all(isinstance(x, (int, float)) and x > 0 for x in value)):
            raise ConfigError(f"{where}: search.perturb = {value!r}: must be a list of positive factors, e.g. [0.8, 1.2]")
    elif key in ("quantile", "resample"):
        hi = 0.5 if key == "quantile" else 1.0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= hi or \
                (key == "quantile" and value == 0):
            raise ConfigError(f"{where}: search.{key} = {value!r}: must be a number in "
                              f"{'(0, 0.5]' if key == 'quantile' else '[0, 1]'}")
    else:  # integer counts: trials and k may be 0 (then the command line gives them)
        least = {"trials": 0, "k": 0, "reduction_factor": 2, "interval": 1, "median_startup_trials": 0,
                 "median_warmup_epochs": 0, "n_startup_trials": 0}[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where}: search.{key} = {value!r}: must be an integer >= {least}")
    return value


def _param(where: str, key: str, spec) -> Param:
    if not searchable(key):
        raise ConfigError(f"{where}: search.{key}: cannot be searched inside one compiled population (it changes the "
                          f"model's structure or the step's shapes); search lr, weight_decay, momentum, betas, "
                          f"dropout rates, schedule settings, optimizer.name, augment.enabled or class_weighted, and "
                          f"put {key} in a grid or a separate experiment")
    if not (isinstance(spec, dict) and len(spec) == 1):
        raise ConfigError(f"{where}: search.{key} = {spec!r}: must be one distribution, e.g. "
                          f"{{ loguniform = [1e-4, 1e-1] }}; distributions: {', '.join(DISTRIBUTIONS)}")
    (kind, values), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: search.{key}: unknown distribution {kind!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: search.{key}.{kind} = {values!r}: empty; give "
                          + ("a non-empty list of choices" if kind == "choice" else "[low, high]"))
    if kind == "choice":
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{where}: search.{key}.choice = {values!r}: repeated choices")
        return Param(key, kind, tuple(values))
    number = int if kind == "int" else (int, float)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, number) for v in values):
        raise ConfigError(f"{where}: search.{key}.{kind} = {values!r}: must be [low, high] "
                          f"({'integers' if kind == 'int' else 'numbers'})")
    low, high = values
    if low > high:
        raise ConfigError(f"{where}: search.{key}.{kind} = {values!r}: low > high; write [{high}, {low}]")
    if low == high:
        raise ConfigError(f"{where}: search.{key}.{kind} = {values!r}: an empty range; widen it or set {key} "
                          f"= {low} in the experiment instead of searching it")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: search.{key}.loguniform = {values!r}: a log range must stay above 0; "
                          f"use e.g. [{high / 1000:g}, {high:g}] or a uniform range")
    return Param(key, kind, (low, high) if kind == "int" else (float(low), float(high)))


def variant(base: dict, values: dict, *, experiment: str, seed: int, where: str) -> VariantConfig:
    """The experiment's raw table with the searched ``values`` put in, parsed like any variant."""
    raw = copy.deepcopy(base)
    for key, value in values.items():
        _put(where, raw, key, copy.deepcopy(value))
    raw["seed"] = seed
    return parse_variant(f"{where}, search point {values}", raw, experiment=experiment, hparams=dict(values))


def corners(space: Space, base: dict, *, experiment: str, seed: int, where: str) -> list[VariantConfig]:
    """Variants at every range end and every choice: parsing them rejects impossible values now, and
    as a population's ``room`` they reserve the structure any point of the space needs."""
    middle = {p.key: p.values[0] for p in space.params}
    out = []
    for p in space.params:
        for value in p.values:
            out.append(variant(base, {**middle, p.key: value}, experiment=experiment, seed=seed, where=where))
    return out
