"""The local record of a run: everything a user needs without W&B.

Layout of a run directory::

    config.toml     fully resolved configuration of every variant (resolved.py; --resume reads it)
    results.json    the results structure below, as written by write_run
    metrics.csv     one row per variant per epoch
    summary.md      the table for a report; mean ± 95% CI (t) over seeds per configuration
    plots/          learning_curves.png, confusion_best.png, per_class_f1.png
    checkpoints/    checkpoint.py files (written by the training loop)

The results structure (accuracies are fractions in [0, 1]; non-finite numbers are written as null)::

    {"variants": [{"id", "hparams", "seed", "diverged", "param_count",
                   "epochs": [{"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_s"}],
                   "final": {"train_acc", "val_acc", "test_acc", "best_epoch", "gap",
                             "per_class": {"precision": [7], "recall": [7], "f1": [7]},
                             "confusion": 7x7 counts, rows = true class,
                             "tta", "tta_test_acc" (only for an experiment with tta; ensembles.py)}}],
     "ensembles": [{"name", "kind" ("seeds" or "top"), "experiment", "members": [ids], "left_out": [ids],
                    "split": "test", "tta", "acc", "confusion", "per_class", "member_acc": [per member],
                    and with tta also "tta_acc", "tta_confusion", "tta_per_class", "tta_member_acc"}],
     "timing": {"compile_s", "step_s", "wall_s"}}
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from pathlib import Path

from fer_func.population.evaluate import per_class  # noqa: F401 (re-exported: the report's per-class metrics)
from fer_func.study import ensembles, plots, resolved
from fer_func.study.checkpoint import atomic_write
from fer_func.study.stats import mean_ci

CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
EPOCH_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_s")


def new_run_dir(out, label: str) -> Path:
    """A fresh ``out/YYYY-mm-dd_HH-MM-SS_label`` with plots/ and checkpoints/ (suffixed if taken)."""
    base = Path(out) / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{re.sub(r'[^A-Za-z0-9_.-]+', '-', label)}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}_{n}"), n + 1
    for sub in ("plots", "checkpoints"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def write_config(run_dir, variants, profile: str | None = None) -> Path:
    """config.toml: written before training so an interrupted run can be resumed."""
    path = Path(run_dir) / "config.toml"
    atomic_write(path, resolved.dumps(variants, profile).encode())
    return path


def best_variant(results: dict) -> int | None:
    """Index of the variant with the highest final val acc, ignoring diverged ones; None if none qualifies."""
    ok = [(v["final"]["val_acc"], i) for i, v in enumerate(results["variants"])
          if not v["diverged"] and _finite(v["final"].get("val_acc"))]
    return max(ok, key=lambda t: (t[0], -t[1]))[1] if ok else None


def write_run(run_dir, results: dict) -> list[Path]:
    """Write results.json, metrics.csv, summary.md and plots/ from ``results``; returns the paths.

    Safe to call after every epoch (each file is replaced atomically); plots need ``final``.
    """
    run_dir = Path(run_dir)
    (run_dir / "plots").mkdir(parents=True, exist_ok=True)
    paths = [run_dir / "results.json", run_dir / "metrics.csv", run_dir / "summary.md"]
    atomic_write(paths[0], json.dumps(_clean(results), indent=1).encode())
    atomic_write(paths[1], metrics_csv(results).encode())
    atomic_write(paths[2], summary_md(results).encode())
    best = best_variant(results)
    paths.append(plots.learning_curves(run_dir / "plots" / "learning_curves.png", results["variants"]))
    paths.append(plots.per_class_f1(run_dir / "plots" / "per_class_f1.png", results["variants"], CLASSES))
    if best is not None:
        v = results["variants"][best]
        paths.append(plots.confusion(run_dir / "plots" / "confusion_best.png", v["final"]["confusion"], CLASSES,
                                     title=f"{v['id']}: val acc {100 * v['final']['val_acc']:.2f}%"))
    return paths


def write_progress(run_dir, results: dict) -> list[Path]:
    """Mid-run: results.json and metrics.csv only (summary.md and plots need every variant's ``final``)."""
    run_dir = Path(run_dir)
    paths = [run_dir / "results.json", run_dir / "metrics.csv"]
    atomic_write(paths[0], json.dumps(_clean(results), indent=1).encode())
    atomic_write(paths[1], metrics_csv(results).encode())
    return paths


def metrics_csv(results: dict) -> str:
    hkeys = list(dict.fromkeys(k for v in results["variants"] for k in v["hparams"]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "seed", *hkeys, *EPOCH_KEYS])
    for v in results["variants"]:
        for e in v["epochs"]:
            w.writerow([v["id"], v["seed"], *(v["hparams"].get(k, "") for k in hkeys),
                        *(_csv_value(e.get(k)) for k in EPOCH_KEYS)])
    return buf.getvalue()


def summary_md(results: dict, confidence: float = 0.95) -> str:
    """The report table; variants that differ only in seed are one row, mean ± CI half-width."""
    groups: dict[str, list] = {}
    for v in results["variants"]:
        groups.setdefault(re.sub(r"-s\d+$", "", v["id"]), []).append(v)
    multi = any(len(vs) > 1 for vs in groups.values())
    pct = f" (mean ± {100 * confidence:g}% CI over seeds)" if multi else ""
    head = ["variant", *(["seeds"] if multi else []), "parameters", "train acc %", "val acc %", "gap %", "test acc %",
            "epoch s", "diverged"]
    where = [f"profile {results['profile']}"] if results.get("profile") else []
    if results.get("train_limit"):
        where.append(f"first {results['train_limit']:,} training images")
    lines = ["# Run summary", "", *_data_lines(results.get("data")), *([", ".join(where) + ".", ""] if where else []),
             f"Accuracies in percent{pct}; gap = train acc - val acc. The gap can be negative: train acc is "
             f"measured while training, with dropout and augmentation on, val acc on the plain images in eval mode. "
             f"Epochs count from 1, as the progress bar does.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, vs in groups.items():
        ok = [v for v in vs if not v["diverged"]]

        def cell(key, scale=100.0):
            xs = [v["final"].get(key) for v in ok]
            xs = [x for x in xs if _finite(x)]
            if not xs:
                return "—"
            m, h = mean_ci(xs, confidence)
            return f"{scale * m:.2f}" + (f" ± {scale * h:.2f}" if math.isfinite(h) else "")

        epoch_s = [e["epoch_s"] for v in vs for e in v["epochs"] if _finite(e.get("epoch_s"))]
        n_div = sum(v["diverged"] for v in vs)
        row = [label, *([str(len(vs))] if multi else []), f"{vs[0]['param_count']:,}", cell("train_acc"),
               cell("val_acc"), cell("gap"), cell("test_acc"), f"{sum(epoch_s) / len(epoch_s):.1f}" if epoch_s else "—",
               ("yes" if len(vs) == 1 else f"{n_div}/{len(vs)}") if n_div else "no"]
        lines.append("| " + " | ".join(row) + " |")
    best = best_variant(results)
    if best is not None:
        v = results["variants"][best]
        epoch = v["final"].get("best_epoch")  # an index into the epochs, from 0
        lines += ["", f"Best variant: **{v['id']}** (val acc {100 * v['final']['val_acc']:.2f}%"
                      + (f", best epoch {epoch + 1}" if isinstance(epoch, int) and epoch >= 0 else "") + ")."]
    more = ensembles.table(results, confidence)
    if more:
        lines += ["", *more]
    pops = [(i, p) for i, p in enumerate(results.get("populations") or []) if _finite(p.get("wall_s"))]
    if pops:
        # Eager runs (--no-compile) record no compile time: no compile columns then.
        compiled = any(_finite(p.get("compile_s")) for _, p in pops)
        cell = lambda x, spec: format(x, spec) if _finite(x) else "—"  # noqa: E731
        head = ["population", "model", "K", *(["compile s (step)", "compile s (eval)"] if compiled else []),
                "step s", "wall s"]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join([str(i + 1), p["model"], str(p["k"]),
                                     *([cell(p.get("compile_s"), ".1f"), cell(p.get("eval_compile_s"), ".1f")]
                                       if compiled else []),
                                     cell(p.get("step_s"), ".3f"), cell(p.get("wall_s"), ".0f")]) + " |"
                  for i, p in pops]
    t = results.get("timing") or {}
    if t:
        lines += ["", "Timing: " + ", ".join(f"{k} = {t[k]:.2f}" for k in ("compile_s", "step_s", "wall_s")
                                              if _finite(t.get(k))) + "."]
    return "\n".join(lines) + "\n"


def _data_lines(data: str | None) -> list[str]:
    """Where the numbers come from: the data source and which FER2013 split each accuracy is measured on."""
    if not data:
        return []
    synthetic = " (generated FER2013-shaped faces, not real ones: the accuracies say nothing about FER2013)"
    return [f"Data: {data}{synthetic if data.startswith('synthetic') else ''}. "
            f"val = FER2013's PublicTest split (picks the best epoch and the best variant), "
            f"test = its PrivateTest split (reported only).", ""]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _csv_value(x):
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _clean(x):
    # Strict JSON has no NaN/inf: a diverged loss is written as null. Tensors/arrays become lists.
    if hasattr(x, "tolist"):
        return _clean(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x
