"""PNG figures for a run directory, drawn with matplotlib's object API on the Agg canvas.

``matplotlib.figure.Figure`` needs no pyplot and no global backend switch, so writing plots from a
training process never opens a window or changes the user's interactive backend.
"""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _color(i: int, n: int):
    from matplotlib import colormaps
    return colormaps["tab10" if n <= 10 else "tab20"](i % 20)


def _nan(x):
    return math.nan if x is None else x


def learning_curves(path, variants: list[dict]) -> Path:
    """Loss and accuracy per epoch: one color per variant, train dashed and val solid."""
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, v in enumerate(variants):
        c = _color(i, len(variants))
        ep = [e["epoch"] for e in v["epochs"]]
        for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
            scale = 100 if key == "acc" else 1
            ax.plot(ep, [scale * _nan(e[f"train_{key}"]) for e in v["epochs"]], "--", color=c, alpha=0.7)
            ax.plot(ep, [scale * _nan(e[f"val_{key}"]) for e in v["epochs"]], "-", color=c, label=v["id"])
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss (train dashed, val solid)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy %", title="accuracy (train dashed, val solid)")
    ax_acc.legend(fontsize="x-small" if len(variants) > 8 else "small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def confusion(path, matrix, classes, title: str = "") -> Path:
    """Row-normalized confusion matrix (rows = true class, so the diagonal is per-class recall)."""
    k = len(classes)
    rows = [[matrix[r][c] / max(sum(matrix[r]), 1) for c in range(k)] for r in range(k)]
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for r in range(k):
        for c in range(k):
            ax.text(c, r, f"{100 * rows[r][c]:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if rows[r][c] > 0.5 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix (% of true class)")
    fig.colorbar(im, ax=ax, label="fraction of true class")
    return _save(fig, path)


def per_class_f1(path, variants: list[dict], classes) -> Path:
    """F1 per class (columns) and variant (rows): a heatmap stays readable for 1 or 30 variants."""
    done = [v for v in variants if v.get("final")]
    fig = Figure(figsize=(8, 1.5 + 0.35 * max(len(done), 1)), layout="constrained")
    ax = fig.subplots()
    grid = [[_nan(x) for x in v["final"]["per_class"]["f1"]] for v in done] or [[math.nan] * len(classes)]
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for r, row in enumerate(grid):
        for c, x in enumerate(row):
            if math.isfinite(x):
                ax.text(c, r, f"{x:.2f}", ha="center", va="center", fontsize=7, color="white" if x < 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(done)), [v["id"] for v in done], fontsize=7)
    ax.set_title("per-class F1 (final model)")
    fig.colorbar(im, ax=ax, label="F1")
    return _save(fig, path)


def _save(fig: Figure, path) -> Path:
    from fer_func.study.checkpoint import atomic_write

    path = Path(path)
    atomic_write(path, writer=lambda f: fig.savefig(f, format="png", dpi=110))
    return path
