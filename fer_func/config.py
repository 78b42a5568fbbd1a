"""Typed configuration shared by the engine, the study runner and the benchmarks.

Static structure (names, flags, sizes) lives here as plain Python; the numbers a population varies
(learning rate, betas, weight decay, dropout, ...) become 0-d tensors only when a population is
built. Values are validated on construction, so an impossible hyperparameter stops the program
before anything compiles; the study loader adds *which experiment and key* to the message.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A user's configuration mistake: the message names the key, the value and the fix."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistyped flag or choice is one line ``error: ...`` and exit 2, like a ConfigError.

    argparse prints the whole usage (a screenful for fer-func) before its error; the line that matters
    then scrolls away. ``--help`` still prints the usage; subparsers inherit this class.
    """

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _check(ok: bool, key: str, value, why: str):
    if not ok:
        raise ConfigError(f"{key} = {value!r}: {why}")


MODEL_NAMES = ("mlp", "simple_cnn", "large_cnn", "regularized_cnn", "resnet", "tiny_cnn")
OPTIMIZER_NAMES = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULE_NAMES = ("constant", "cosine", "step", "plateau")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "simple_cnn"
    knobs: dict = field(default_factory=dict)  # architecture knobs, e.g. {"channels": [32, 64]}

    def __post_init__(self):
        _check(self.name in MODEL_NAMES, "model.name", self.name, f"unknown model; choose one of {', '.join(MODEL_NAMES)}")


# torch.optim's defaults where they differ between optimizers; an omitted lr or weight_decay takes
# its optimizer's (torch.optim.RMSprop's lr is 1e-2, AdamW's weight decay 1e-2). Tested against
# torch.optim.<X>(...).defaults.
TORCH_DEFAULTS = {"sgd": {"lr": 1e-3, "weight_decay": 0.0}, "adam": {"lr": 1e-3, "weight_decay": 0.0},
                  "adamw": {"lr": 1e-3, "weight_decay": 1e-2}, "rmsprop": {"lr": 1e-2, "weight_decay": 0.0}}


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"
    lr: float = None            # None: torch.optim's default for ``name`` (TORCH_DEFAULTS)
    weight_decay: float = None  # coupled (L2 in the gradient) except for adamw, where it is decoupled
    momentum: float = 0.0       # sgd, rmsprop
    dampening: float = 0.0      # sgd
    nesterov: bool = False      # sgd
    beta1: float = 0.9          # adam, adamw
    beta2: float = 0.999        # adam, adamw
    eps: float = 1e-8           # adam, adamw, rmsprop
    alpha: float = 0.99         # rmsprop smoothing constant
    centered: bool = False      # rmsprop

    def __post_init__(self):
        _check(self.name in OPTIMIZER_NAMES, "optimizer.name", self.name, f"unknown optimizer; choose one of {', '.join(OPTIMIZER_NAMES)}")
        for key, value in TORCH_DEFAULTS[self.name].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        # The one rule for a learning rate: the optimizers and schedules take it as validated here.
        _check(isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and self.lr > 0
               and math.isfinite(self.lr), "optimizer.lr", self.lr,
               "the learning rate must be > 0 and finite; set a number such as 1e-3 (--set optimizer.lr=1e-3)")
        _check(self.weight_decay >= 0, "optimizer.weight_decay", self.weight_decay, "must be >= 0")
        _check(0 <= self.momentum < 1, "optimizer.momentum", self.momentum, "must be in [0, 1)")
        _check(0 <= self.dampening <= 1, "optimizer.dampening", self.dampening, "must be in [0, 1]")
        _check(not self.nesterov or (self.momentum > 0 and self.dampening == 0), "optimizer.nesterov", self.nesterov,
               "Nesterov momentum requires momentum > 0 and dampening = 0")
        _check(0 <= self.beta1 < 1, "optimizer.beta1", self.beta1, "must be in [0, 1)")
        _check(0 <= self.beta2 < 1, "optimizer.beta2", self.beta2, "must be in [0, 1)")
        _check(self.eps > 0, "optimizer.eps", self.eps, "must be > 0")
        _check(0 <= self.alpha < 1, "optimizer.alpha", self.alpha, "must be in [0, 1)")

    @property
    def rule(self) -> tuple:
        """The static structure of the update rule: variants with equal rules share one code path."""
        return (self.name, self.nesterov, self.centered)


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "constant"
    unit: str = "epoch"         # cosine/step: advance per "epoch" or per optimizer "step"
    t_max: int = 0              # cosine period in units; 0 = the whole run
    eta_min: float = 0.0        # cosine floor
    step_size: int = 10         # step decay period in units
    gamma: float = 0.1          # step decay factor
    mode: str = "max"           # plateau: "max" watches validation accuracy, "min" validation loss
    factor: float = 0.1         # plateau
    patience: int = 2           # plateau
    threshold: float = 1e-4     # plateau
    threshold_mode: str = "rel"  # plateau
    cooldown: int = 0           # plateau
    min_lr: float = 0.0         # plateau

    def __post_init__(self):
        _check(self.name in SCHEDULE_NAMES, "schedule.name", self.name, f"unknown schedule; choose one of {', '.join(SCHEDULE_NAMES)}")
        _check(self.unit in ("epoch", "step"), "schedule.unit", self.unit, "must be 'epoch' or 'step'")
        _check(self.t_max >= 0, "schedule.t_max", self.t_max, "must be >= 0 (0 means the whole run)")
        _check(self.eta_min >= 0, "schedule.eta_min", self.eta_min, "must be >= 0")
        _check(self.step_size > 0, "schedule.step_size", self.step_size, "must be > 0")
        _check(0 < self.gamma <= 1, "schedule.gamma", self.gamma, "must be in (0, 1]")
        _check(self.mode in ("min", "max"), "schedule.mode", self.mode, "must be 'min' or 'max'")
        _check(0 < self.factor < 1, "schedule.factor", self.factor, "Factor should be < 1.0 (and > 0)")
        _check(self.patience >= 0, "schedule.patience", self.patience, "must be >= 0")
        _check(self.threshold_mode in ("rel", "abs"), "schedule.threshold_mode", self.threshold_mode, "must be 'rel' or 'abs'")
        _check(self.cooldown >= 0, "schedule.cooldown", self.cooldown, "must be >= 0")
        _check(self.min_lr >= 0, "schedule.min_lr", self.min_lr, "must be >= 0")


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = False
    rotation: float = 10.0      # degrees, uniform in [-rotation, rotation]
    flip: float = 0.5           # probability of a horizontal flip
    brightness: float = 0.2     # factor uniform in [1 - b, 1 + b] (torchvision ColorJitter semantics)
    contrast: float = 0.2       # factor uniform in [1 - c, 1 + c]
    mixup: float = 0.0          # MixUp Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0         # CutMix Beta(alpha, alpha); 0 = off

    def __post_init__(self):
        _check(0 <= self.rotation <= 180, "augment.rotation", self.rotation, "degrees must be in [0, 180]")
        _check(0 <= self.flip <= 1, "augment.flip", self.flip, "a probability must be in [0, 1]")
        _check(0 <= self.brightness < 1, "augment.brightness", self.brightness, "must be in [0, 1)")
        _check(0 <= self.contrast < 1, "augment.contrast", self.contrast, "must be in [0, 1)")
        _check(self.mixup >= 0, "augment.mixup", self.mixup, "alpha must be >= 0 (0 = off)")
        _check(self.cutmix >= 0, "augment.cutmix", self.cutmix, "alpha must be >= 0 (0 = off)")


@dataclass(frozen=True)
class EarlyStoppingConfig:
    patience: int = 0           # stop after this many epochs without a validation gain; 0 = never stop early
    min_delta: float = 0.0      # a gain must exceed this (accuracy, 0.005 = half a point) to count

    def __post_init__(self):
        _check(isinstance(self.patience, int) and self.patience >= 0, "early_stopping.patience", self.patience,
               "must be an integer >= 0 (0 = off)")
        _check(self.min_delta >= 0, "early_stopping.min_delta", self.min_delta, "must be >= 0")


@dataclass(frozen=True)
class VariantConfig:
    """Everything one trained model depends on. A population is a list of these sharing ``model``."""
    experiment: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    batch_size: int = 64
    epochs: int = 10
    seed: int = 0
    class_weighted: bool = False    # weight the loss by inverse class frequency (Disgust is rare)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    cv: int = 0                     # k-fold cross-validation: 0 = off (validate on PublicTest); k >= 2 folds
    fold: int = -1                  # with cv: the Training fold this variant validates on (trains on the others)
    hparams: dict = field(default_factory=dict)  # the grid values that distinguish this variant (for reports)

    def __post_init__(self):
        _check(isinstance(self.batch_size, int) and self.batch_size > 0, "batch_size", self.batch_size, "must be a positive integer")
        _check(isinstance(self.epochs, int) and self.epochs > 0, "epochs", self.epochs, "must be a positive integer")
        _check(isinstance(self.seed, int) and 0 <= self.seed < 2**32, "seed", self.seed, "must be an integer in [0, 2**32)")
        _check(self.cv == 0 or self.cv >= 2, "cv", self.cv, "k-fold cross-validation needs k >= 2 folds (0 = off)")
        _check(-1 <= self.fold < max(self.cv, 0) or (self.cv == 0 and self.fold == -1), "fold", self.fold,
               f"must be in [0, cv) (cv = {self.cv}); leave it out to train every fold")

    def replace(self, **changes) -> "VariantConfig":
        return dataclasses.replace(self, **changes)
