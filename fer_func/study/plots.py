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


LEGEND_ROWS = 30  # legend entries per column, at most


def _with_legend(entries: int, size: tuple) -> tuple[int, tuple]:
    """Columns for a legend of ``entries`` beside the axes, and the figure size (at least ``size``) that
    keeps room for the axes under it: 2.6 inches per extra column, 0.15 per row."""
    cols = max(1, math.ceil(entries / LEGEND_ROWS))
    rows = math.ceil(max(entries, 1) / cols)
    return cols, (size[0] + 2.6 * (cols - 1), max(size[1], 1.0 + 0.15 * rows))


def learning_curves(path, variants: list[dict]) -> Path:
    """Loss and accuracy per epoch: one color per variant, train dashed and val solid.

    The legend (one row per variant) gets columns of at most LEGEND_ROWS and the figure grows with it
    (:func:`_with_legend`): a fixed 4.5-inch figure left no room for the axes under the legend of an
    ``--all`` run (58 variants with two seeds), and matplotlib gave up on the layout with a warning."""
    cols, size = _with_legend(len(variants), (12, 4.5))
    fig = Figure(figsize=size, layout="constrained")
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
    ax_acc.legend(fontsize="x-small" if len(variants) > 8 else "small", loc="center left", bbox_to_anchor=(1.01, 0.5),
                  ncols=cols)
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


def mean_curves(path, series: list[dict], title: str = "") -> Path:
    """Seed-averaged accuracy per epoch: one color per configuration, val solid with its CI band, train dashed.

    ``series`` items: ``{"label", "epochs", "train", "val", "val_half"}``, accuracies as fractions
    (nan where no seed has a value), ``val_half`` the CI half-width per epoch (nan for one seed).
    """
    cols, size = _with_legend(len(series), (7.5, 4.2))
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    for i, s in enumerate(series):
        c = _color(i, len(series))
        val = [100 * _nan(x) for x in s["val"]]
        ax.plot(s["epochs"], [100 * _nan(x) for x in s["train"]], "--", color=c, alpha=0.6)
        ax.plot(s["epochs"], val, "-", color=c, label=s["label"])
        half = [100 * _nan(h) for h in s["val_half"]]
        if any(math.isfinite(h) for h in half):
            ax.fill_between(s["epochs"], [v - h for v, h in zip(val, half)], [v + h for v, h in zip(val, half)],
                            color=c, alpha=0.12, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="accuracy %", title=title or "mean accuracy over seeds (train dashed, val solid)")
    ax.legend(fontsize="x-small" if len(series) > 6 else "small", loc="center left", bbox_to_anchor=(1.01, 0.5),
              ncols=cols)
    return _save(fig, path)


def accuracy_bars(path, labels, means, halves, reference, groups=None, title: str = "") -> Path:
    """Horizontal bars of mean accuracy (fractions) with CI error bars, each beside a grey reference bar.

    ``reference`` holds the original study's numbers in percent, None where it reported none;
    ``groups`` (one name per bar) picks the bar colors, so the rows of one experiment share one.
    """
    n = len(labels)
    groups = list(groups) if groups is not None else list(labels)
    names = list(dict.fromkeys(groups))
    fig = Figure(figsize=(8.5, 1.4 + 0.32 * max(n, 1)), layout="constrained")
    ax = fig.subplots()
    rows = list(range(n))[::-1]  # first label on top
    ours = [100 * _nan(m) for m in means]
    err = [100 * h if h is not None and math.isfinite(h) else 0.0 for h in halves]
    ax.barh([r + 0.18 for r in rows], ours, height=0.36, xerr=err, capsize=2,
            color=[_color(names.index(g), len(names)) for g in groups], label="this run (mean ± CI)")
    ref_rows = [(r, x) for r, x in zip(rows, reference) if x is not None]
    if ref_rows:
        ax.barh([r - 0.18 for r, _ in ref_rows], [x for _, x in ref_rows], height=0.36, color="0.75",
                hatch="//", edgecolor="0.45", label="original study")
    for r, m, e in zip(rows, ours, err):
        if math.isfinite(m):
            ax.text(m + e + 0.8, r + 0.18, f"{m:.1f}", va="center", fontsize=7)
    ax.set_yticks(rows, labels, fontsize=8)
    ax.set_xlim(0, 100)
    ax.set(xlabel="best validation accuracy %", title=title or "best validation accuracy per configuration")
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, path)


def predictions(path, images, true, pred, classes, cols: int = 7, title: str = "") -> Path:
    """A grid of faces (uint8 (N, 48, 48)), each titled with its predicted and true class: green when
    they agree, red when not."""
    n = len(images)
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(1.3 * cols, 1.55 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < n:
            ax.imshow(images[k], cmap="gray", vmin=0, vmax=255)
            right = int(pred[k]) == int(true[k])
            ax.set_title(f"{classes[int(pred[k])]}\n(true {classes[int(true[k])]})", fontsize=7,
                         color="tab:green" if right else "tab:red")
    fig.suptitle(title or "PrivateTest: predicted (true)", fontsize=9)
    return _save(fig, path)
