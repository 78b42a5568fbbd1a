"""RUN_DIR/config.toml: the fully resolved configuration of every variant of a run.

Every field of every section is written out (defaults included), so the file alone reproduces the
run and ``--resume RUN_DIR`` rebuilds the exact variant list from it, through the same validating
parser as experiments.toml. ``tomllib`` only reads TOML; the small writer here covers the values a
VariantConfig holds (bools, ints, floats, strings, lists and tables of them).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

from fer_func.config import ConfigError, VariantConfig
from fer_func.study.tables import SCALARS, SECTIONS, parse_variant, read_toml, variant_id

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def dumps(variants: list[VariantConfig], profile: str | None = None) -> str:
    out = ["# Fully resolved configuration of every variant in this run (written by fer_func.study).",
           "# `python runner.py --resume RUN_DIR` reads it back.", ""]
    if profile is not None:  # the experiments.toml profile the variants were resolved under
        out += [f"profile = {_value(profile)}", ""]
    for v in variants:
        out += ["[[variant]]", f"id = {_value(variant_id(v))}", f"experiment = {_value(v.experiment)}"]
        out += [f"{k} = {_value(getattr(v, k))}" for k in SCALARS]
        out.append(f"hparams = {_value(v.hparams)}")
        for section in SECTIONS:
            out.append(f"[variant.{section}]")
            out += [f"{_key(k)} = {_value(x)}" for k, x in dataclasses.asdict(getattr(v, section)).items()]
        out.append("")
    return "\n".join(out)


def dump(path, variants: list[VariantConfig]) -> None:
    Path(path).write_text(dumps(variants))


def load(path) -> list[VariantConfig]:
    """The variants of a run directory's config.toml (or of the file ``path`` itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.toml"
    doc = read_toml(path, f"{str(path)!r} not found; --resume expects a run directory written by runner.py", path)
    variants = []
    for i, table in enumerate(doc.get("variant", [])):
        table = dict(table)
        vid, experiment, hparams = table.pop("id", None), table.pop("experiment", "custom"), table.pop("hparams", {})
        v = parse_variant(f"{path.name}: variant {i} ({vid})", table, experiment=experiment, hparams=hparams)
        if vid is not None and variant_id(v) != vid:
            raise ConfigError(f"{path.name}: variant {i}: id = {vid!r} does not match its settings ({variant_id(v)!r})")
        variants.append(v)
    if not variants:
        raise ConfigError(f"{path}: no [[variant]] tables")
    return variants


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def _value(x) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return repr(x) if math.isfinite(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, str):
        return json.dumps(x, ensure_ascii=False)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_value(y) for y in x) + "]"
    if isinstance(x, dict):
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(y)}" for k, y in x.items()) + " }" if x else "{}"
    raise TypeError(f"cannot write {x!r} ({type(x).__name__}) to TOML")
