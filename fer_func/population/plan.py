"""What a population shares (static, plain Python) and what each variant varies (tensors).

``make_plan`` checks that a list of :class:`~fer_func.config.VariantConfig` can train as one
population and fixes the static structure the compiled step is specialised on: the model, the
micro-batch size, the number of micro-steps per epoch, whether gradients are accumulated, the
augmentation settings. Everything that differs between variants becomes a tensor in ``hp``
(per-variant constants) or in the carried state, so one graph serves the whole grid.

Batch sizes. Every variant steps through the same sequence of micro-batches of
``micro_batch = gcd(batch sizes)`` samples (its own data order, same seed -> same order). A
variant with batch size ``B`` sums ``B / micro_batch`` micro-batch gradients and updates on the
last one, so it receives exactly the update a solo run at batch ``B`` computes (up to float
summation order). Each epoch is ``floor(N / B)`` full batches (the last partial batch is dropped,
as ``drop_last=True``); variants whose epoch is a few micro-steps shorter sit idle (masked) for
the remainder, the only wasted compute (``plan.waste``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from fer_func import models
from fer_func.config import AugmentConfig, ConfigError, VariantConfig


@dataclass(frozen=True)
class Plan:
    model: models.Model
    micro_batch: int              # samples per compiled step, per variant
    steps_per_epoch: int          # micro-steps per epoch (the longest variant's)
    active_steps: tuple           # per variant: micro-steps it trains each epoch
    accumulate: bool              # any variant with batch_size > micro_batch
    augment: AugmentConfig | None  # shared augmentation settings (None: no variant augments)
    epochs: int
    num_train: int
    varying_dropout: tuple = ()   # dropout knobs whose rate differs between variants: tensors in ``hp``

    @property
    def num_variants(self) -> int:
        return len(self.active_steps)

    @property
    def waste(self) -> float:
        """Fraction of variant-micro-steps that are masked idle (batch-size populations only)."""
        return 1 - sum(self.active_steps) / (self.num_variants * self.steps_per_epoch)


def _shared_model_config(v: VariantConfig, model: models.Model):
    # Dropout rates are tensors in the step, so variants may differ in them and still share a graph.
    return {k: val for k, val in model.knobs.items() if k not in model.dropout_knobs}


def dropout_rates(v: VariantConfig, knobs: tuple) -> tuple:
    """``((knob, rate), ...)`` of variant ``v`` for the population's varying dropout ``knobs``."""
    m = models.build_from(v.model)
    return tuple((k, float(getattr(m, k) or 0.0)) for k in knobs)


def make_plan(variants: list[VariantConfig], num_train: int, micro_batch: int | None = None,
              room: list[VariantConfig] = ()) -> Plan:
    """``micro_batch`` overrides gcd(batch sizes), e.g. to give a solo run the ghost-BN batches of a population.

    ``room`` lists variants the population must be able to take into a slot later without
    recompiling (a search's trials): they join the static structure (dropout rates that vary,
    augmentation settings, batch sizes) but train no slot now.
    """
    if not variants:
        raise ConfigError("a population needs at least one variant")
    slots = len(variants)
    variants = list(variants) + list(room)
    built = [models.build_from(v.model) for v in variants]
    first, model = variants[0], built[0]
    for v, m in zip(variants, built):
        if m.name != model.name or _shared_model_config(v, m) != _shared_model_config(first, model):
            raise ConfigError(f"variant {v.hparams or v.experiment!r}: model {m.name} {m.knobs} differs from the "
                              f"population's {model.name} {model.knobs}; only dropout rates may vary inside one "
                              f"population (run other architectures as separate populations)")
        if v.epochs != first.epochs:
            raise ConfigError(f"variant {v.hparams!r}: epochs = {v.epochs} differs from {first.epochs}; a population "
                              f"trains all variants for the same number of epochs")
        if v.batch_size > num_train:
            raise ConfigError(f"variant {v.hparams or v.experiment!r}: batch_size = {v.batch_size} is larger than the "
                              f"training set ({num_train} images); lower batch_size or raise --train-limit")
    augmenting = [v.augment for v in variants if v.augment.enabled]
    for a in augmenting:
        if dataclasses.replace(a, enabled=True) != augmenting[0]:
            raise ConfigError(f"augment = {a} differs from {augmenting[0]}; variants of one population may switch "
                              f"augmentation on or off but must share its settings")
    # A rate shared by every variant stays a static float in the model (a zero rate then draws no
    # mask at all); only rates that differ become per-variant tensors.
    rates = [{k: float(getattr(m, k) or 0.0) for k in model.dropout_knobs} for m in built]
    varying = tuple(k for k in model.dropout_knobs if len({r[k] for r in rates}) > 1)
    micro = micro_batch or math.gcd(*(v.batch_size for v in variants))
    for v in variants:
        if v.batch_size % micro:
            raise ConfigError(f"micro_batch = {micro} does not divide batch_size = {v.batch_size}")
    updates = [num_train // v.batch_size for v in variants]
    active = tuple(u * v.batch_size // micro for u, v in zip(updates, variants))[:slots]
    return Plan(model=model, micro_batch=micro, steps_per_epoch=max(active), active_steps=active,
                accumulate=any(v.batch_size > micro for v in variants),
                augment=augmenting[0] if augmenting else None, epochs=first.epochs, num_train=num_train,
                varying_dropout=varying)
