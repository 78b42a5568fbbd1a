"""``runner.py --search NAME --ray``: one search population per device, all asking one Optuna study.

    driver: the search's setup, checked here -> P populations (one per GPU, or per
            --ray-cpus-per-population CPUs) -> P Ray tasks -> their results merged into one run
    worker: fer_func/search/run.py's run, the same as a local search, with K slots of its own, the
            shared study's storage (a journal file in the shared storage) and its own sampler seed

Why one Optuna study through its storage and not Ray Tune: a Tune trial is one configuration per
worker, so K trials inside one compiled population would be hidden from it, and Tune's schedulers
would stop and start whole populations. Optuna's ask/tell already drives the slots, and its journal
file (or any RDB URL) is safe for several processes, so the populations simply share it. The trial
budget is global: each population asks only while the study holds fewer than ``--trials`` trials,
and a trial numbered past the budget (two populations asking at once) is told FAIL unused.

PBT exploits across the slots of one population on one device, so ``--method pbt`` stays local.
A killed worker is retried by Ray and resumes its population from its checkpoint, as a local
``--resume`` does; its running trials continue where they were.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from fer_func.runtime import machine
from fer_func.config import ConfigError
from fer_func.distributed import ray_run
from fer_func.study import checkpoint
from fer_func.study.options import RunOptions


RAY_JSON = "ray.json"  # a Ray search's populations and shared study, beside the search's run.json


def run(options: RunOptions) -> Path:
    with ray_run.session(options.ray):
        return _run(options)


def _worker(spec: dict, data) -> dict:
    """One search population (runs in a Ray worker). A retry finds its run directory and resumes it."""
    from fer_func.search import run as search_run
    from fer_func.search.trials import BudgetSpent

    out = Path(spec["out"])
    previous = sorted(p for p in out.glob("*") if (p / "run.json").is_file()) if out.is_dir() else []
    placement = ray_run.start_worker(out / "placement.json", spec["device"], spec["cpus"])
    options = dataclasses.replace(spec["options"], resume=previous[-1] if previous else None)
    try:
        run_dir = search_run.run(options, data=data, progress_bar=False)
    except BudgetSpent:  # it started after the other populations had asked for every trial
        return {"run_dir": None, "results": None, "placement": placement}
    results = json.loads((Path(run_dir) / "results.json").read_text())
    return {"run_dir": str(run_dir), "results": results, "placement": placement}


def _run(options: RunOptions) -> Path:
    import ray

    from fer_func import data as fer_data
    from fer_func.search import report, run as search_run

    started = time.perf_counter()
    resumed = options.resume is not None
    if resumed:  # the populations and storage it started with (ray.json), the search as run.json says
        ray_saved = json.loads((Path(options.resume) / RAY_JSON).read_text())
        options = dataclasses.replace(options, ray_storage=ray_saved["ray_storage"])
    options = search_run._resolve(options)
    setup = search_run.Setup(options)  # the space, budget and K, checked before any worker starts
    if setup.method == "pbt":
        raise ConfigError("--method pbt with --ray: PBT exploits across one population's slots on one device; "
                          "run it without --ray, or use --method tpe or random to spread trials over devices")
    device, resources = ray_run.device_and_resources(options.device, options.ray_cpus)
    if resumed:
        run_dir, n_pop, journal = Path(options.resume), ray_saved["populations"], ray_saved["storage"]
    else:
        if options.search.storage is not None:
            search_run.refuse_taken_name(setup, options.search.storage)  # before the run directory exists
        n_pop = ray_run.device_count(resources)
        run_dir = search_run.new_run_dir(options.out, f"search-{setup.exp.name}-{setup.method}-ray")
    storage = ray_run.storage_dir(options, run_dir)
    if not resumed:
        journal = options.search.storage or str(storage / "optuna.journal")
        saved = {k: getattr(options, k) for k in search_run.SAVED}
        saved.update(experiments=str(options.experiments),
                     search={**dataclasses.asdict(options.search), "storage": journal, "study_name": setup.study_name})
        checkpoint.atomic_write(run_dir / "run.json", json.dumps(saved, indent=1).encode())
        checkpoint.atomic_write(run_dir / RAY_JSON, json.dumps({
            "populations": n_pop, "storage": journal,
            "ray_storage": None if options.ray_storage is None else str(options.ray_storage)}).encode())
    print(f"search {setup.exp.name} on Ray: {n_pop} populations of K={setup.k}, one per {device.type} "
          f"({ray_run.describe(resources)}), {setup.trials} trials in one study ({journal})",
          flush=True)

    data = fer_data.load(options.data, skip_bad_rows=options.skip_bad_rows).limit_train(options.train_limit)
    data_ref = ray.put(data)  # once, into the object store
    task = ray.remote(max_retries=ray_run.MAX_RETRIES, retry_exceptions=False, **resources)(_worker)
    base = dataclasses.replace(options, ray=None, ray_cpus=None, ray_storage=None, resume=None, device=device.type)
    pending = {}
    for i in range(n_pop):
        out = storage / "populations" / f"p{i}"
        spec = {"out": str(out), "device": device.type, "cpus": resources["num_cpus"],
                "options": dataclasses.replace(base, out=out, search=dataclasses.replace(
                    options.search, storage=journal, worker=i, study_name=setup.study_name, join=True))}
        pending[task.remote(spec, data_ref)] = i
    outcomes = dict(ray_run.gather(pending, run_dir))
    results = merge([outcomes[i]["results"] for i in range(n_pop)], [outcomes[i]["placement"] for i in range(n_pop)],
                    [outcomes[i]["run_dir"] for i in range(n_pop)], setup, time.perf_counter() - started)
    results["ray"] = {"address": options.ray, "resources": resources, "storage": journal}
    report.write(run_dir, results)
    print((run_dir / "summary.md").read_text())
    return run_dir


def is_ray_search(run_dir) -> bool:
    return (Path(run_dir) / RAY_JSON).is_file()


def merge(parts: list, placements: list[dict], run_dirs: list, setup, wall_s: float) -> dict:
    """One search's results from its populations': every trial once, the best over all, the cost summed.
    A population that found the budget spent when it started (``None``) trained nothing."""
    live = [(i, p) for i, p in enumerate(parts) if p is not None]
    trials = sorted((t for _, p in live for t in p["trials"]), key=lambda t: t["number"])
    bests = [(i, p["best"]) for i, p in live if p.get("best")]
    best_i, best = max(bests, key=lambda ib: ib[1]["val_acc"]) if bests else (None, None)
    first = live[0][1]
    return {"command": " ".join(["python", "runner.py", *sys.argv[1:]]) if sys.argv[0].endswith("runner.py") else None,
            "started": first["started"], "machine": machine(__import__("torch").device("cpu")),
            "experiment": first["experiment"], "method": first["method"], "k": setup.k * len(parts),
            "trials_budget": setup.trials, "epochs_per_trial": first["epochs_per_trial"], "profile": first["profile"],
            "data": first["data"], "space": first["space"], "seed": first["seed"],
            "population_epochs": max(p["population_epochs"] for _, p in live),
            "slot_epochs": sum(p.get("slot_epochs") or 0 for _, p in live),
            "variant_epochs": sum(p["variant_epochs"] for _, p in live), "wall_s": wall_s,
            "compile_s": max((p["compile_s"] or 0) for _, p in live), "trials": trials,
            "best": None if best is None else {**best, "population": best_i},
            "populations": [{"k": setup.k, "trials": len(p["trials"]) if p else 0, "wall_s": p and p["wall_s"],
                             "compile_s": p and p["compile_s"], "run_dir": d, **pl}
                            for p, pl, d in zip(parts, placements, run_dirs)]}
