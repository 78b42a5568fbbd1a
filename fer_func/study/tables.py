"""One variant's raw TOML table -> a typed :class:`~fer_func.config.VariantConfig`, and the id that names it.

The pieces every reader of an experiments file or a run's ``config.toml`` shares: experiments.py (a catalog of
experiments and their grids), resolved.py (a run directory's variants, read back) and space.py (a search point put
into an experiment's table) all parse a variant here, so none of them imports another to get it. Every mistake is a
one-line :class:`~fer_func.config.ConfigError` prefixed by where it was found.
"""
from __future__ import annotations

import importlib.util
import tomllib
import typing
from dataclasses import fields
from pathlib import Path

from fer_func.config import (AugmentConfig, ConfigError, EarlyStoppingConfig, ModelConfig, OptimizerConfig,
                             ScheduleConfig, VariantConfig)

SECTIONS = {"model": ModelConfig, "optimizer": OptimizerConfig, "schedule": ScheduleConfig,
            "augment": AugmentConfig, "early_stopping": EarlyStoppingConfig}
SCALARS = {"batch_size": int, "epochs": int, "seed": int, "class_weighted": bool, "cv": int, "fold": int}
# Every experiment states these, so the file alone says what each experiment trains.
REQUIRED = ("model", "optimizer", "schedule", "augment", "batch_size", "epochs", "seed")
META = ("id", "description", "grid", "search", "ensemble", "tta")  # ensemble/tta: fer_func/study/ensembles.py


def read_toml(path: Path, missing: str, label) -> dict:
    """A TOML file as a dict; a missing file or a syntax error is a ConfigError (``missing``, or ``label: ...``)."""
    if not path.is_file():
        raise ConfigError(missing)
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{label}: invalid TOML: {e}") from None


def variant_id(v: VariantConfig) -> str:
    """A readable, unique id: ``lr[lr=0.01,schedule=cosine]-s0``; ``regularized_cnn-s0`` without a grid."""
    parts = [f"{_short(k)}={_fmt(x)}" for k, x in v.hparams.items()]
    return v.experiment + (f"[{','.join(parts)}]" if parts else "") + f"-s{v.seed}"


def _short(key: str) -> str:
    # "optimizer.lr" -> "lr", "schedule.name" -> "schedule": the last word that means something.
    words = key.split(".")
    return words[-2] if words[-1] == "name" and len(words) > 1 else words[-1]


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:g}"
    if isinstance(x, list):
        return "x".join(_fmt(y) for y in x)
    return str(x)


def parse_variant(where: str, table: dict, *, experiment: str, hparams: dict | None = None) -> VariantConfig:
    """One raw settings table -> VariantConfig; every mistake becomes a ConfigError prefixed by ``where``."""
    for key in REQUIRED:
        if key not in table:
            raise ConfigError(f"{where}: missing key {key!r}; every experiment states it explicitly")
    kwargs = {}
    try:
        for key, value in table.items():
            if key in SECTIONS:
                kwargs[key] = _section(key, value, SECTIONS[key])
            elif key in SCALARS:
                kwargs[key] = _typed(key, value, SCALARS[key])
            else:
                raise ConfigError(f"unknown key {key!r}; valid keys: {', '.join([*META, *SECTIONS, *SCALARS])}")
        return VariantConfig(experiment=experiment, hparams=dict(hparams or {}), **kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _section(name: str, value, cls):
    if not isinstance(value, dict):
        raise ConfigError(f"{name} = {value!r}: must be a table, e.g. {name} = {{ name = ... }}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    kwargs = {}
    for key, x in value.items():
        if key not in valid:
            raise ConfigError(f"{name}.{key}: unknown key; valid keys: {', '.join(valid)}")
        kwargs[key] = _typed(f"{name}.{key}", x, hints[key])
    if cls is ModelConfig:
        _check_knobs(kwargs.get("knobs", {}))
        model = cls(**kwargs)
        if importlib.util.find_spec("fer_func.models") is not None:
            from fer_func.models import build_from
            build_from(model)  # the models package knows each family's knobs; fail now, not mid-run
        return model
    return cls(**kwargs)


def _typed(key: str, x, typ):
    ok = {bool: lambda: isinstance(x, bool),
          int: lambda: isinstance(x, int) and not isinstance(x, bool),
          float: lambda: isinstance(x, (int, float)) and not isinstance(x, bool),
          str: lambda: isinstance(x, str),
          dict: lambda: isinstance(x, dict)}[typ]()
    if not ok:
        raise ConfigError(f"{key} = {x!r}: expected {'a number' if typ is float else typ.__name__}, got {type(x).__name__}")
    return float(x) if typ is float else x


def _check_knobs(knobs: dict):
    # The models package validates each model's knobs; dropout rates are checked here for every model.
    for k, x in knobs.items():
        if k.startswith("dropout") and not (isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1):
            raise ConfigError(f"model.knobs.{k} = {x!r}: a dropout rate must be a number in [0, 1)")



# --- dotted keys in a raw table ---------------------------------------------------------------

def _get(table: dict, path: str, default=None):
    for word in path.split("."):
        if not isinstance(table, dict) or word not in table:
            return default
        table = table[word]
    return table


def _put(where: str, table: dict, path: str, value, merge: bool = False):
    *parents, last = path.split(".")
    for word in parents:
        table = table.setdefault(word, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {path}: {word!r} is not a table")
    if merge and isinstance(value, dict):
        base = table.setdefault(last, {})
        if not isinstance(base, dict):
            raise ConfigError(f"{where}: {path}: cannot merge a table into {base!r}")
        base.update({k: v for k, v in value.items() if k != "label"})
    else:
        table[last] = value
