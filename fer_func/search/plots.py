"""A search's figures: best accuracy against cost for Optuna searches; for PBT the winner's
hyperparameter schedule (traced through its ancestors) and the population's accuracy over time."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fer_func.study.plots import _save


def write(folder, results: dict) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if results["method"] == "pbt":
        paths = [population_accuracy(folder / "pbt_population.png", results)]
        if results.get("best"):
            paths.append(winner_schedule(folder / "pbt_winner_schedule.png", results))
        return paths
    return [trials_over_cost(folder / "search_progress.png", results)]


def trials_over_cost(path, results: dict) -> Path:
    """Each trial's best validation accuracy at the variant-epochs spent when it ended, and the best so far."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    spent, best, xs, ys, colors = 0, 0.0, [], [], []
    order = sorted(results["trials"], key=lambda t: (t["started_epoch"] + len(t["epochs"]), t["number"]))
    curve = []
    for t in order:
        spent += len(t["epochs"])
        acc = 100 * (t["best_val_acc"] or 0.0)
        xs.append(spent), ys.append(acc), colors.append({"complete": "tab:blue", "pruned": "tab:orange"}.get(t["state"], "tab:red"))
        best = max(best, acc)
        curve.append(best)
    ax.scatter(xs, ys, c=colors, s=18, label="trial (blue complete, orange pruned, red diverged)")
    ax.step(xs, curve, where="post", color="k", label="best so far")
    ax.set(xlabel="variant-epochs spent", ylabel="best validation accuracy %",
           title=f"{results['experiment']}: {results['method']} search, K={results['k']}")
    ax.legend(fontsize="small")
    return _save(fig, path)


def population_accuracy(path, results: dict) -> Path:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for t in results["trials"]:
        ep = [e["epoch"] + 1 for e in t["epochs"]]
        ax.plot(ep, [100 * e["val_acc"] for e in t["epochs"]], alpha=0.6, label=f"slot {t['slot']}")
    for e in results.get("lineage", []):
        ax.axvline(e["epoch"] + 0.5, color="grey", lw=0.5, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="validation accuracy %", title="PBT population (grey: exploit points)")
    ax.legend(fontsize="x-small", ncol=2)
    return _save(fig, path)


def winner_schedule(path, results: dict) -> Path:
    schedule = results["best"]["schedule"]
    keys = [k for k in schedule[0] if k not in ("epoch", "slot")]
    numeric = [k for k in keys if isinstance(schedule[0][k], (int, float)) and not isinstance(schedule[0][k], bool)]
    fig = Figure(figsize=(4 * max(1, len(numeric)), 3.5), layout="constrained")
    axes = fig.subplots(1, max(1, len(numeric)), squeeze=False)[0]
    for ax, key in zip(axes, numeric):
        ax.step([s["epoch"] + 1 for s in schedule], [s[key] for s in schedule], where="post")
        if key.endswith(("lr", "weight_decay")):
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", title=key)
    fig.suptitle(f"PBT winner (member {results['best']['trial']}): hyperparameters through its ancestors")
    return _save(fig, path)
