"""Which trained networks of a run directory to export, and their best-epoch weights.

A run directory holds every variant's config (config.toml), its results (results.json) and one
K-stacked checkpoint per population (checkpoints/population-G.pt). A variant's weights are row i of
population G's ``best`` params and model state, where G and i come from regrouping config.toml's
variants exactly as run.py did (``experiments.populations``); results.json's ``population`` field
is checked against that, so a change to the grouping rule cannot silently export the wrong row.
"""
from __future__ import annotations

import json
from pathlib import Path

from fer_func.config import ConfigError, VariantConfig
from fer_func.models import build_from
from fer_func.study import checkpoint, experiments, report, resolved
from fer_func.use import trial
from fer_func.use.errors import UseError
from fer_func.use.member import Member


def _results(run_dir: Path) -> dict:
    path = run_dir / "results.json"
    if not path.is_file():
        raise UseError(f"{run_dir}: no results.json; RUN_DIR must be a run directory written by "
                       f"`python runner.py` (runs/<date>_<label>/)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UseError(f"{path}: not valid JSON ({e}); rerun or resume the run to rewrite it") from None


def _variants(run_dir: Path) -> list[VariantConfig]:
    if not run_dir.is_dir():
        raise UseError(f"run directory {str(run_dir)!r} not found; pass a folder under runs/ written by `python runner.py`")
    try:
        return resolved.load(run_dir)
    except ConfigError as e:
        raise UseError(f"{run_dir}: cannot read config.toml: {e}") from None


def _locate(variants, results, run_dir: Path) -> dict[str, tuple[int, int, VariantConfig]]:
    """``{variant id: (population, row, config)}``, as run.py grouped them (split by the run's --max-k)."""
    run_json = run_dir / "run.json"
    max_k = json.loads(run_json.read_text()).get("max_k") if run_json.is_file() else None
    where = {experiments.variant_id(v): (g, i, v)
             for g, group in enumerate(experiments.split(experiments.populations(variants), max_k))
             for i, v in enumerate(group)}
    for entry in results.get("variants", []):
        g = where.get(entry["id"], (None,))[0]
        if g is not None and entry.get("population", g) != g:
            raise UseError(f"variant {entry['id']!r}: results.json puts it in population {entry['population']}, "
                           f"but config.toml regroups it into population {g}; this run was written by a version "
                           f"of fer_func that grouped variants differently, export it with that version")
    return where


def _final(results: dict) -> dict[str, dict]:
    return {e["id"]: e for e in results.get("variants", [])}


def _member(run_dir: Path, vid: str, where, finals, cache: dict) -> Member:
    g, i, v = where[vid]
    if g not in cache:
        path = run_dir / "checkpoints" / f"population-{g}.pt"
        if not path.is_file():
            raise UseError(f"{path}: missing; variant {vid!r} has not trained an epoch yet "
                           f"(continue the run with `python runner.py --resume {run_dir}`)")
        try:
            cache[g] = checkpoint.load(path, map_location="cpu")["best"]
        except Exception as e:  # a truncated or foreign file: torch raises several types, all mean "unreadable"
            raise UseError(f"{path}: not a readable population checkpoint ({type(e).__name__}: {e}); "
                           f"rerun or resume the run that wrote it") from None
    best = cache[g]
    epoch = int(best["epoch"][i])
    if epoch < 0:
        raise UseError(f"variant {vid!r} has no best epoch (it never reached a finite validation accuracy); "
                       f"choose another with --variant ID (ids are in {run_dir / 'results.json'})")
    model = build_from(v.model)
    params = {k: t[i] for k, t in best["params"].items()}
    state = {k: t[i] for k, t in best["model_state"].items()}
    final = (finals.get(vid) or {}).get("final") or {}
    return Member(id=vid, variant=v, population=g, index=i, state_dict=model.to_state_dict(params, state),
                  best_epoch=epoch, val_acc=final.get("val_acc"), test_acc=final.get("test_acc"))


def _architecture(v: VariantConfig) -> tuple:
    # Dropout rates do not change the network at inference (nor any weight's shape), so variants that
    # differ only in them are one architecture for an ensemble.
    model = build_from(v.model)
    return v.model.name, tuple(sorted((k, str(x)) for k, x in model.knobs.items() if k not in model.dropout_knobs))


def every(run_dir) -> dict[str, Member | UseError]:
    """Every variant's Member, or the UseError that says why it has none (it never reached a finite
    validation accuracy): W&B's model artifacts (fer_func/study/tracking.py). One load per checkpoint."""
    run_dir = Path(run_dir)
    variants, results = _variants(run_dir), _results(run_dir)
    where, finals, cache, out = _locate(variants, results, run_dir), _final(results), {}, {}
    for vid in where:
        try:
            out[vid] = _member(run_dir, vid, where, finals, cache)
        except UseError as e:
            out[vid] = e
    return out


def select(run_dir, which: str = "best") -> tuple[list[Member], list[dict]]:
    """``(members, left_out)`` for ``which`` = a variant id, ``"best"`` or ``"ensemble"``.

    ``"best"`` is the variant summary.md names (highest best-epoch validation accuracy, diverged
    variants excluded). ``"ensemble"`` is every variant with the best one's architecture that did
    not diverge; ``left_out`` lists the others with the reason. A ``--search`` run has only its best
    trial (trial.py).
    """
    run_dir = Path(run_dir)
    run_json = run_dir / "run.json"
    if run_json.is_file() and "search" in json.loads(run_json.read_text()):
        # a search keeps its best trial in checkpoints/search.pt, not in per-population best weights
        return trial.best(run_dir, which)
    variants = _variants(run_dir)
    results = _results(run_dir)
    where, finals = _locate(variants, results, run_dir), _final(results)
    cache: dict = {}
    if which not in ("best", "ensemble"):
        if which not in where:
            raise UseError(f"--variant {which!r}: no such variant in {run_dir}; choose 'best', 'ensemble' or one "
                           f"of: {', '.join(where)}")
        return [_member(run_dir, which, where, finals, cache)], []
    entries = results.get("variants", [])
    if not entries or any(e.get("final") is None for e in entries):
        raise UseError(f"{run_dir}: the run has not finished, so there is no best variant yet; finish it with "
                       f"`python runner.py --resume {run_dir}` or pick one with --variant ID")
    best = report.best_variant(results)
    if best is None:
        raise UseError(f"{run_dir}: every variant diverged; there is no network worth exporting")
    best_id = entries[best]["id"]
    if which == "best":
        return [_member(run_dir, best_id, where, finals, cache)], []
    arch = _architecture(where[best_id][2])
    members, left_out = [], []
    for e in entries:
        if _architecture(where[e["id"]][2]) != arch:
            left_out.append({"id": e["id"], "why": f"another architecture ({where[e['id']][2].model.name} "
                                                  f"{where[e['id']][2].model.knobs})"})
        elif e["diverged"]:
            left_out.append({"id": e["id"], "why": "diverged"})
        else:
            members.append(_member(run_dir, e["id"], where, finals, cache))
    return members, left_out
