"""A search's results per *trial* (not per slot): results.json, summary.md, plots and W&B runs.

An Optuna trial is one configuration from ask to tell, whichever slot held it; a PBT member is one
slot's line of descent, whose values change at each exploit (its lineage). Both become rows of
``results["trials"]``: the configuration, epochs trained, how it ended, its best validation
accuracy; the best trial also gets its PrivateTest accuracy, from its best-epoch weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fer_func import tree
from fer_func.search.pbt import PBT
from fer_func.study.checkpoint import atomic_write
from fer_func.study.report import _clean
from fer_func.study.tracking import run_id_for


def _is_pbt(driver) -> bool:
    return isinstance(driver, PBT)


def _fmt(values: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in values.items())


def trial_rows(driver, pop=None) -> list[dict]:
    if not _is_pbt(driver):
        return [{k: v for k, v in r.items() if k != "variant"} for r in driver.trials.values()]
    rows = []
    for slot in range(driver.k):
        rows.append({"number": slot, "slot": slot, "params": dict(driver.values[slot]), "state": "member",
                     "epochs": [], "best_val_acc": None, "best_epoch": None,
                     "lineage": [e for e in driver.lineage if e["slot"] == slot]})
    return rows


def progress(driver, results: dict):
    results["trials"] = trial_rows(driver)
    results["variant_epochs"] = sum(len(t["epochs"]) for t in results["trials"]) if not _is_pbt(driver) \
        else driver.k * driver.epoch
    if _is_pbt(driver):
        results["lineage"] = driver.lineage


def epoch_line(driver, pop, record) -> str:
    acc = np.asarray(record["val_acc"])
    if _is_pbt(driver):
        return f"epoch {driver.epoch}/{driver.epochs}: best val {100 * acc.max():.1f}%, mean {100 * acc.mean():.1f}%"
    done = [t for t in driver.trials.values() if t["state"] != "running"]
    best = max((t["best_val_acc"] for t in driver.trials.values() if t["best_val_acc"] is not None), default=0.0)
    return (f"population epoch {pop.epoch}: {len(done)}/{driver.n_trials} trials done "
            f"({sum(t['state'] == 'pruned' for t in done)} pruned), best val so far {100 * best:.1f}%")


def finish(pop, driver, results: dict, runs, wall_s: float):
    """The best trial's PrivateTest accuracy and the final per-trial rows."""
    progress(driver, results)
    results["wall_s"], results["slot_epochs"] = wall_s, len(pop.variants) * pop.epoch
    if _is_pbt(driver):
        final = pop.finish()  # every member's best-epoch weights on PrivateTest, one vmapped eval
        for row, f, hist in zip(results["trials"], final, _member_epochs(pop)):
            row.update(best_val_acc=f["val_acc"], best_epoch=f["best_epoch"], test_acc=f["test_acc"], epochs=hist)
        best = max(range(len(final)), key=lambda i: final[i]["val_acc"])
        results["best"] = {"trial": best, "params": results["trials"][best]["params"],
                           "val_acc": final[best]["val_acc"], "test_acc": final[best]["test_acc"],
                           "schedule": driver.ancestry(best)}
    else:
        best = driver.best_trial()
        results["best"] = None if best is None else {
            "trial": best["number"], "params": best["params"], "val_acc": best["best_val_acc"],
            "epochs": len(best["epochs"]), **best_weights_test(pop, *driver.best_weights())}
    runs.close(results)


def _member_epochs(pop) -> list[list[dict]]:
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    return [[{"epoch": int(r["epoch"]), **{k: float(r[k][i]) for k in keys}} for r in pop.history]
            for i in range(len(pop.variants))]


def write_progress(run_dir, results: dict):
    atomic_write(Path(run_dir) / "results.json", json.dumps(_clean(results), indent=1).encode())


def write(run_dir, results: dict) -> list[Path]:
    run_dir = Path(run_dir)
    write_progress(run_dir, results)
    atomic_write(run_dir / "summary.md", summary_md(results).encode())
    from fer_func.search import plots
    return [run_dir / "results.json", run_dir / "summary.md", *plots.write(run_dir / "plots", results)]


def summary_md(results: dict) -> str:
    pbt = results["method"] == "pbt"
    trials = sorted(results["trials"], key=lambda t: -(t["best_val_acc"] if t["best_val_acc"] is not None else -1))
    best = results.get("best")
    out = [f"# Search: {results['experiment']} ({results['method']}, K={results['k']})", "",
           f"- command: `{results.get('command')}`", f"- started {results['started']} on {_machine(results['machine'])}",
           f"- data: {results['data']}; profile {results['profile']}; {results['epochs_per_trial']} epochs per "
           + ("member" if pbt else "trial at most"),
           f"- cost: {results['population_epochs']} population epochs = {results.get('slot_epochs')} slot-epochs; "
           f"{results['variant_epochs']} variant-epochs trained; wall {results['wall_s']:.0f} s "
           f"(compile {results['compile_s'] or 0:.0f} s)"]
    if best is not None:
        out.append(f"- **best: {'member' if pbt else 'trial'} {best['trial']}, val {100 * best['val_acc']:.2f}%, "
                   f"PrivateTest {100 * best['test_acc']:.2f}%** ({_fmt(best['params'])})")
    if not pbt:
        states = [t["state"] for t in results["trials"]]
        out.append(f"- trials: {len(states)} ({states.count('complete')} complete, {states.count('pruned')} pruned, "
                   f"{states.count('diverged')} diverged)")
    out += ["", "| " + ("member" if pbt else "trial") + " | configuration" + (" (final)" if pbt else "")
            + " | epochs | " + ("exploits" if pbt else "ended") + " | best val % |", "|---|---|---|---|---|"]
    for t in trials:
        ended = len(t.get("lineage", [])) if pbt else t["state"]
        acc = "" if t["best_val_acc"] is None else f"{100 * t['best_val_acc']:.2f}"
        out.append(f"| {t['number']} | {_fmt(t['params'])} | {len(t['epochs'])} | {ended} | {acc} |")
    if pbt and results.get("lineage"):
        out += ["", "## Lineage (exploit and explore at each ready point)", "",
                "| epoch | slot | copied from | values after |", "|---|---|---|---|"]
        out += [f"| {e['epoch']} | {e['slot']} | {e['from']} | {_fmt(e['after'])} |" for e in results["lineage"]]
    return "\n".join(out) + "\n"


def _machine(m) -> str:
    if not isinstance(m, dict):
        return str(m)
    return f"{m.get('cpu')}, {m.get('host_cpus')} CPUs, GPU {m.get('gpu') or 'none'}, torch {m.get('torch')}"


class TrialRuns:
    """One W&B run per trial (per member for PBT), opened when it starts and closed when it ends.

    Run ids are derived from the run directory and the trial number, so a resumed search continues
    the same W&B runs (``resume="allow"``).
    """

    def __init__(self, tracker, run_name: str):
        self.tracker, self.run_name, self.open = tracker, run_name, {}

    def _run(self, key: str, name: str, config: dict):
        if key not in self.open:
            self.open[key] = self.tracker.open_run(name, config, run_id=run_id_for(self.run_name, key))
        return self.open[key]

    def log(self, driver, pop, record):
        if not self.tracker.enabled:
            return
        for slot in range(len(pop.variants)):
            if _is_pbt(driver):
                key, name, config = f"m{slot}", f"member-{slot}", {"slot": slot}
            else:
                number = driver.slot_trial[slot]
                if number is None:
                    continue
                params = driver.trials[number]["params"]
                key, name, config = f"t{number}", f"trial-{number}", {"trial": number, **params}
            row = {k: float(record[k][slot]) for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr")}
            row["gap"] = row["train_acc"] - row["val_acc"]
            values = driver.values[slot] if _is_pbt(driver) else {}
            self._run(key, name, config).log({"epoch": pop.slot_epoch(slot) - 1, **row,
                                              **{f"hp/{k}": v for k, v in values.items()}})

    def after(self, driver, events: list[dict]):
        if not self.tracker.enabled:
            return
        if _is_pbt(driver):
            for e in events:
                run = self.open.get(f"m{e['slot']}")
                if run is not None:
                    run.log({"epoch": e["epoch"] - 1, "exploited_from": e["from"]})
            return
        for rec in events:
            run = self.open.pop(f"t{rec['number']}", None)
            if run is not None:
                run.summary.update({"state": rec["state"], "epochs": len(rec["epochs"])})  # val_acc.max: define_metric
                run.finish()

    def close(self, results: dict):
        for key, run in list(self.open.items()):
            if key.startswith("m"):
                slot = int(key[1:])
                row = results["trials"][slot]
                run.config.update({"lineage": row.get("lineage", [])}, allow_val_change=True)
                run.summary.update({k: row.get(k) for k in ("best_val_acc", "best_epoch", "test_acc")})
            run.finish()
        self.open = {}


def best_weights_test(pop, params, model_state) -> dict:
    """One member's (params, model_state) on PrivateTest, through the population's compiled eval:
    the member is broadcast to K copies, so the eval program is the one already compiled."""
    k = len(pop.variants)
    stacked = [tree.tree_map(lambda x: x.unsqueeze(0).expand(k, *x.shape).contiguous(), t) for t in (params, model_state)]
    test = pop.evaluate("test", *stacked)
    return {"test_acc": float(test["acc"][0]), "test_loss": float(test["loss"][0]),
            "confusion": test["confusion"][0].tolist()}
