"""Grid vs random search vs TPE (both pruned) vs PBT at equal device time, over several search seeds.

    python scripts/search_compare.py --data ../shared/data/fer2013/fer2013.csv.gz --seeds 3 --budget 10 \
        --k 8 --json search_compare.json

The space is the regularized CNN's ``[search]`` table without ``optimizer.name`` (lr x weight decay
x dropout, as issue 12 asks). Device time is counted in *slot-epochs*: every method trains K slots
for ``budget`` population epochs (idle or frozen slots still cost their share), so all spend the
same. The grid is what that buys: ``budget * K / epochs`` configurations, each trained for the
experiment's epochs. Random search and TPE ask trials until the budget ends (trials still running
then are stopped and count as pruned). PBT trains its K members for ``budget`` epochs.

All methods share one compiled program: the same model, K, rules and varying dropout knobs.
For each method and seed it records the best validation accuracy, that model's PrivateTest
accuracy, variant-epochs trained, the variant-epochs spent when the best-so-far first reached the
grid's mean best, and wall time. docs/search.md reads the JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from fer_func import data as fer_data
from fer_func.runtime import machine
from fer_func.population import Population
from fer_func.study import space as spaces
from fer_func.search.pbt import PBT
from fer_func.search.report import best_weights_test
from fer_func.search.trials import TrialSearch, make_pruner, make_sampler
from fer_func.study import experiments, stats
from fer_func.study.options import DEFAULT_EXPERIMENTS

METHODS = ("grid", "random", "tpe", "pbt")


def grid_points(space: spaces.Space, n: int) -> list[dict]:
    """``n`` configurations on a grid over ``space``, as a user would lay one out: the first setting (lr)
    gets the most points, every other setting two; points sit at the centres of equal slices of each
    range (log slices for log ranges), never on its edges (lr 1e-4 and 1e-2 are both poor here)."""
    others = [p for p in space.params[1:]]
    per_first = max(1, n // (2 ** len(others)))
    first = space.params[0]

    def spread(p, m):
        lo, hi = (math.log(p.values[0]), math.log(p.values[1])) if p.kind == "loguniform" else p.values
        xs = [lo + (i + 0.5) / m * (hi - lo) for i in range(m)]
        return [float(math.exp(x)) if p.kind == "loguniform" else float(x) for x in xs]

    axes = [spread(first, per_first)] + [spread(p, 2) for p in others]
    return [dict(zip([first.key] + [p.key for p in others], point)) for point in itertools.product(*axes)]


class Study:
    def __init__(self, args):
        catalog = experiments.load(args.experiments, args.profile)
        self.exp = experiments.find(catalog, "regularized_cnn")
        full = self.exp.space()
        self.space = dataclasses.replace(full, params=tuple(p for p in full.params if p.key != "optimizer.name"))
        self.data = fer_data.load(args.data).limit_train(args.train_limit or catalog_profile(args).train_limit)
        self.k, self.budget, self.args = args.k, args.budget, args
        self.where = f"compare: {self.exp.name}"

    def variant(self, values: dict, seed: int, epochs: int | None = None):
        table = dict(self.exp.table, **({"epochs": epochs or self.args.epochs} if epochs or self.args.epochs else {}))
        return spaces.variant(table, values, experiment=self.exp.name, seed=seed, where=self.where)

    def population(self, variants, seed):
        table = dict(self.exp.table, epochs=variants[0].epochs)
        room = spaces.corners(self.space, table, experiment=self.exp.name, seed=seed, where=self.where)
        return Population(variants, self.data, compile=not self.args.no_compile, room=room)


def catalog_profile(args):
    return experiments.profile_of(args.experiments, args.profile)


def run_grid(s: Study, seed: int) -> dict:
    epochs = s.variant({}, seed).epochs
    points = grid_points(s.space, s.budget * s.k // epochs)
    rows, t0, pop_epochs = [], time.perf_counter(), 0
    for start in range(0, len(points), s.k):
        chunk = points[start:start + s.k]
        pop = s.population([s.variant(p, seed) for p in chunk], seed)
        for _ in range(epochs):
            pop.train_epoch()
        pop_epochs += epochs
        for p, f in zip(chunk, pop.finish()):
            rows.append({"params": p, "best_val_acc": f["val_acc"], "test_acc": f["test_acc"], "epochs": epochs})
    best = max(rows, key=lambda r: r["best_val_acc"])
    curve = [(epochs * (i + 1), r["best_val_acc"]) for i, r in enumerate(rows)]
    return {"best_val_acc": best["best_val_acc"], "test_acc": best["test_acc"], "best_params": best["params"],
            "variant_epochs": epochs * len(rows), "slot_epochs": s.k * pop_epochs, "trials": rows,
            "curve": _best_so_far(curve), "wall_s": time.perf_counter() - t0}


def run_optuna(s: Study, seed: int, method: str) -> dict:
    epochs = s.variant({}, seed).epochs
    t0 = time.perf_counter()
    # A fixed study name: Hyperband assigns trials to brackets by hashing it, so a random name
    # (Optuna's default) would make the pruning, and the result, differ from run to run.
    study = optuna.create_study(sampler=make_sampler(method, seed), direction="maximize", study_name=f"{method}-s{seed}",
                                pruner=make_pruner(s.space.option("pruner"), epochs, s.space.option("reduction_factor")))
    driver = TrialSearch(s.space, study, lambda values, n: s.variant(values, seed), trials=10 ** 6, k=s.k,
                         epochs=epochs)
    pop = driver.start(lambda variants: s.population(variants, seed))
    while not driver.done and pop.epoch < s.budget:
        driver.after_epoch(pop, pop.train_epoch())
    driver.stop_all(pop)
    trials = sorted((t for t in driver.trials.values() if t["epochs"]),
                    key=lambda t: t["started_epoch"] + len(t["epochs"]))
    best = driver.best_trial()
    spent, curve = 0, []
    for t in trials:
        spent += len(t["epochs"])
        curve.append((spent, t["best_val_acc"]))
    return {"best_val_acc": best["best_val_acc"], **best_weights_test(pop, *driver.best_weights()),
            "best_params": best["params"], "variant_epochs": spent, "slot_epochs": s.k * pop.epoch,
            "trials": [{k: t[k] for k in ("number", "params", "state", "best_val_acc")} | {"epochs": len(t["epochs"])}
                       for t in trials],
            "curve": _best_so_far(curve), "wall_s": time.perf_counter() - t0}


def run_pbt(s: Study, seed: int) -> dict:
    t0 = time.perf_counter()
    driver = PBT(s.space, lambda values, slot: s.variant(values, seed, epochs=s.budget), k=s.k, epochs=s.budget,
                 seed=seed)
    pop = driver.start(lambda variants: s.population(variants, seed))
    while not driver.done:
        driver.after_epoch(pop, pop.train_epoch())
    final = pop.finish()
    best = max(range(s.k), key=lambda i: final[i]["val_acc"])
    return {"best_val_acc": final[best]["val_acc"], "test_acc": final[best]["test_acc"],
            "best_params": driver.values[best], "variant_epochs": s.k * s.budget, "slot_epochs": s.k * s.budget,
            "schedule": driver.ancestry(best), "lineage": driver.lineage, "curve": [],
            "wall_s": time.perf_counter() - t0}


def _best_so_far(curve):
    out, best = [], -1.0
    for spent, acc in curve:
        best = max(best, acc)
        out.append((spent, best))
    return out


def spent_to_reach(curve, target: float):
    return next((spent for spent, best in curve if best >= target), None)


def summarize(runs: dict) -> dict:
    out = {}
    grid_mean = float(np.mean([r["best_val_acc"] for r in runs["grid"]])) if runs.get("grid") else None
    for method, rs in runs.items():
        val = [r["best_val_acc"] for r in rs]
        test = [r["test_acc"] for r in rs]
        out[method] = {"val_mean_ci": stats.mean_ci(val), "test_mean_ci": stats.mean_ci(test),
                       "variant_epochs": float(np.mean([r["variant_epochs"] for r in rs])),
                       "slot_epochs": float(np.mean([r["slot_epochs"] for r in rs])),
                       "wall_s": float(np.mean([r["wall_s"] for r in rs])),
                       "to_reach_grid_mean": [spent_to_reach(r["curve"], grid_mean) for r in rs] if grid_mean else None}
    return out


def markdown(out: dict) -> str:
    """docs/search.md's table from the JSON this module writes."""
    rows = ["| method | best val % (mean ± 95% CI, seeds) | its PrivateTest % | variant-epochs trained | "
            "slot-epochs (device time) | variant-epochs to reach the grid's mean best | wall s (mean) |",
            "|---|---|---|---|---|---|---|"]
    names = {"grid": "(a) grid", "random": "(b) random + Hyperband", "tpe": "(c) TPE + Hyperband", "pbt": "(d) PBT"}
    for method, sm in out["summary"].items():
        (v, vh), (t, th) = sm["val_mean_ci"], sm["test_mean_ci"]
        n = len(out["runs"][method])
        ci = lambda m, h: f"{100 * m:.2f} ± {100 * h:.2f}" if math.isfinite(h) else f"{100 * m:.2f}"  # noqa: E731
        reach = sm["to_reach_grid_mean"]
        reach = "—" if method in ("grid", "pbt") or reach is None else ", ".join("never" if r is None else str(r)
                                                                                 for r in reach)
        rows.append(f"| {names.get(method, method)} ({n} seeds) | {ci(v, vh)} | {ci(t, th)} | {sm['variant_epochs']:.0f} | "
                    f"{sm['slot_epochs']:.0f} | {reach} | {sm['wall_s']:.0f} |")
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python scripts/search_compare.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="synthetic")
    p.add_argument("--experiments", type=Path, default=DEFAULT_EXPERIMENTS)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--train-limit", type=int)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--budget", type=int, default=10, help="population epochs every method may train")
    p.add_argument("--epochs", type=int, help="epochs per grid configuration / Optuna trial (default: the experiment's)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    s = Study(args)
    methods = args.methods.split(",")
    out = {"command": "python scripts/search_compare.py " + " ".join(argv or __import__("sys").argv[1:]),
           "started": time.strftime("%Y-%m-%d %H:%M"), "machine": {k: str(v) for k, v in machine(torch.device("cpu")).items()},
           "data": s.data.describe(), "profile": args.profile, "k": args.k, "budget_population_epochs": args.budget,
           "epochs_per_trial": s.variant({}, 0).epochs,
           "space": [dataclasses.asdict(p) for p in s.space.params], "runs": {m: [] for m in methods}}
    for seed in range(args.seeds):
        for method in methods:
            r = run_grid(s, seed) if method == "grid" else run_pbt(s, seed) if method == "pbt" else \
                run_optuna(s, seed, method)
            out["runs"][method].append({"seed": seed, **r})
            print(f"seed {seed} {method}: best val {100 * r['best_val_acc']:.2f}% test {100 * r['test_acc']:.2f}% "
                  f"variant-epochs {r['variant_epochs']} wall {r['wall_s']:.0f}s", flush=True)
            out["summary"] = summarize({m: rs for m, rs in out["runs"].items() if rs})
            args.json.write_text(json.dumps(out, indent=1, default=str))
    print(markdown(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
