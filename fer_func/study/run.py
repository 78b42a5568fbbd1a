"""Run what a :class:`~fer_func.study.options.RunOptions` asks for: populations, progress, report, W&B, resume.

    variants -> populations (shared architecture) -> for each: epochs of one compiled step
             -> per epoch: metrics.csv/results.json/summary.md, W&B log, an atomic checkpoint
             -> at the end: best-epoch test metrics, plots, W&B confusion matrix

A run directory is self-contained: ``config.toml`` (written first) says what to train and
``checkpoints/population-N.pt`` where each population stands, so ``--resume RUN_DIR`` continues an
interrupted run and ends with the same numbers as an uninterrupted one (timings aside). Ctrl-C
finishes the current step, checkpoints, and says how to resume.
"""
from __future__ import annotations

import dataclasses
import logging
from contextlib import ExitStack, closing
import json
import threading
import time
from pathlib import Path

import torch

from fer_func import data as fer_data
from fer_func.runtime import command, machine
from fer_func.models import build_from
from fer_func.study import checkpoint, ensembles, experiments, report
from fer_func.population import precision as precisions
from fer_func.study.estimate import peak_gmacs
from fer_func.study.options import RunOptions, resolve_device
from fer_func.study.progress import RunProgress
from fer_func.study import tracking
from fer_func.study.tracking import Tracker
from fer_func.study.train import StopFlag, train_population


# torch's C++-extension helper warns "No CUDA runtime is found" on every CPU compile of a CUDA build of
# torch: noise in the middle of a progress bar, not something a user can act on.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

# Options a resumed run takes from run.json: they decide the numbers, so they cannot change mid-run.
RESUMED = ("data", "train_limit", "dtype", "profile", "precision", "max_k")
# And the W&B project and entity: a resumed run continues its own W&B runs (fixed ids, tracking.py).
TRACKED = ("wandb_project", "wandb_entity")


def _label(options: RunOptions) -> str:
    return options.study or options.experiment or ("all" if options.all else "run")


def _epoch_records(record: dict, i: int) -> dict:
    """Variant ``i``'s row of a population's epoch record (epoch and epoch time are shared by all)."""
    row = {k: float(record[k][i]) for k in report.EPOCH_KEYS if k not in ("epoch", "epoch_s")}
    return {"epoch": int(record["epoch"]), **row, "epoch_s": float(record["epoch_s"])}


def _load_data(options: RunOptions):
    data = fer_data.load(options.data, skip_bad_rows=options.skip_bad_rows)
    return data.limit_train(options.train_limit)


def _resolve(options: RunOptions) -> RunOptions:
    """Fix the profile and the training subset it implies, so run.json records what ran."""
    if options.resume is not None:  # the data, dtype, profile and precision the run started with, whatever this command says
        saved = json.loads((Path(options.resume) / "run.json").read_text())
        return dataclasses.replace(options, **{k: saved.get(k) for k in RESUMED + TRACKED})
    profile = experiments.profile_of(options.experiments, options.profile_name)
    return dataclasses.replace(options, profile=profile.name,
                               train_limit=options.train_limit or profile.train_limit,
                               wandb_project=tracking.project_name(options.wandb_project),
                               wandb_entity=tracking.entity_name(options.wandb_entity))


def run(options: RunOptions, *, ray_run=None, model_artifacts=None) -> Path:
    """Train the run ``options`` asks for and write its report; returns the run directory.

    ``options.ray`` (``--ray``) trains each population as a Ray task: that run starts at
    ``fer_func.distributed.ray_run.run(options)``, which opens the Ray session and passes itself in as
    ``ray_run`` (its ``device_and_resources`` and ``populations``), so this module never imports the
    distributed layer above it. ``model_artifacts(tracker, results, data)``, when given (the CLI gives
    fer_func.use.artifacts.log_models), logs each variant's best network to W&B once the report is written."""
    if options.ray is not None and ray_run is None:
        raise ValueError(f"options.ray = {options.ray!r}: a --ray run starts at "
                         f"fer_func.distributed.ray_run.run(options), which opens the Ray session")
    started = time.perf_counter()
    options = _resolve(options)
    resources = None
    if options.ray is not None:  # each population's device is the one its Ray task is given
        device, resources = ray_run.device_and_resources(options.device, options.ray_cpus)
    else:
        device = resolve_device(options.device)
    print(f"profile: {options.profile or 'full'}  train images: {options.train_limit or 'all'}  device: {device}", flush=True)
    options = dataclasses.replace(options, precision=options.precision or precisions.default(device))
    precision = options.precision
    print(precisions.configure(device, precision), flush=True)
    variants = experiments.plan(options)
    data = _load_data(options)
    experiments.check_dataset(variants, int(data.labels["train"].shape[0]))
    groups = experiments.split(experiments.populations(variants), options.max_k)
    # The experiments' ensemble/tta keys (ensembles.py), checked now; a resumed run keeps the ones it started with.
    if options.resume is not None:
        chosen = json.loads((Path(options.resume) / "run.json").read_text()).get("ensembles", {})
    else:
        chosen = ensembles.settings(options.experiments, options.profile_name, variants)
    for note in ensembles.notes(variants, chosen):
        print(f"note: {note}", flush=True)
    need, store = ensembles.wanted(variants, chosen), {}

    if options.resume is not None:
        run_dir = Path(options.resume)
    else:
        run_dir = report.new_run_dir(options.out, _label(options))
        report.write_config(run_dir, variants, profile=options.profile)
        checkpoint.atomic_write(run_dir / "run.json", json.dumps({
            **{k: getattr(options, k) for k in RESUMED + TRACKED}, "ensembles": chosen,
            "ray_storage": None if options.ray_storage is None else str(options.ray_storage)}).encode())
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    clock = WallClock(run_dir, started)
    print(f"data: {data.describe()}  device: {device}  run directory: {run_dir}")

    entries = {id(v): {"id": experiments.variant_id(v), "experiment": v.experiment, "hparams": dict(v.hparams),
                       "seed": v.seed, "diverged": False, "param_count": 0, "macs": 0, "population": g, "epochs": [],
                       "final": None} for g, group in enumerate(groups) for v in group}
    # The report and W&B list variants in population order.
    results = {"command": command(),
               "started": time.strftime("%Y-%m-%d %H:%M"),
               "machine": {**machine(device if resources is None else torch.device("cpu")),  # the driver's
                           "peak_gmacs": round(peak_gmacs(device if resources is None else "cpu"), 1)},
               "ray": None if resources is None else {"address": options.ray, "resources": resources},
               "profile": options.profile or "full", "train_limit": options.train_limit, "data": data.describe(),
               "device": str(device), "precision": precision, "variants": [entries[id(v)] for group in groups for v in group],
               "populations": [{"model": group[0].model.name, "k": len(group), "compile_s": None, "eval_compile_s": None,
                                "step_s": None, "wall_s": None} for group in groups],
               "timing": {"compile_s": 0.0 if options.compile else None, "step_s": 0.0, "wall_s": 0.0,
                          "processes": clock.processes}}

    def progress():
        results["timing"]["wall_s"] = clock.total()
        report.write_progress(run_dir, results)

    try:
        with Tracker(options.wandb, run_dir, project=options.wandb_project, entity=options.wandb_entity,
                     group=run_dir.name) as tracker, StopFlag() as stop, ExitStack() as stack:
            for group in groups:
                model = build_from(group[0].model)
                for v in group:
                    entries[id(v)]["param_count"], entries[id(v)]["macs"] = model.param_count, model.macs
            tracker.start([v for group in groups for v in group], [e["param_count"] for e in results["variants"]])

            if options.ray is not None:  # one population per device on a Ray cluster (fer_func/distributed)
                outcomes = ray_run.populations(options, run_dir, groups, data, device, resources, need, chosen,
                                               stop=lambda: stop.set)
            else:
                bars = stack.enter_context(closing(RunProgress(groups, int(data.labels["train"].shape[0]))))
                outcomes = (train_population(groups[g], g, len(groups), data, options, device, run_dir, need, chosen,
                                             stop=lambda: stop.set, progress=bars,
                                             on_epoch=lambda record, group=groups[g]: (
                                                 _record_epoch(record, group, entries, tracker), progress()))
                            for g in range(len(groups)))
            for outcome in outcomes:
                g = outcome["g"]
                if options.ray is not None:  # the worker's epochs arrive with its result: replay them here
                    for record in outcome["history"]:
                        _record_epoch(record, groups[g], entries, tracker)
                _gather(outcome, groups[g], entries, store, results)
                progress()
            results["ensembles"], tta = ensembles.measure(results["variants"], store, chosen)
            for v in results["variants"]:
                v["final"].update(tta.get(v["id"], {}))
            results["timing"]["wall_s"] = clock.total()
            report.write_run(run_dir, results)  # W&B's model artifacts and figures come from these files
            if model_artifacts is not None:  # each variant's best network to W&B (use/artifacts.py, from the CLI)
                model_artifacts(tracker, results, data)
            tracker.finish(results)
    finally:
        clock.stop()  # an interrupted run's time counts too
    print((run_dir / "summary.md").read_text())
    return run_dir


class WallClock:
    """A run's wall time summed over every process that worked on it (a run resumed across sessions).

    A thread writes RUN_DIR/wall_s (this process's time plus the earlier ones') every ``period``
    seconds, so a process killed without warning loses at most that much from the total."""

    def __init__(self, run_dir: Path, started: float, period: float = 30.0):
        self.path, self.started = Path(run_dir) / "wall_s", started
        before = self.path.read_text().split() if self.path.exists() else ["0", "0"]
        self.before, self.processes = float(before[0]), int(before[1]) + 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(period,), daemon=True)
        self._thread.start()

    def total(self) -> float:
        return self.before + time.perf_counter() - self.started

    def write(self):
        checkpoint.atomic_write(self.path, f"{self.total():.1f} {self.processes}\n".encode())

    def _beat(self, period):
        while not self._stop.wait(period):
            self.write()

    def stop(self):
        self._stop.set()
        self.write()


def _record_epoch(record, group, entries, tracker):
    rows = {}
    for i, v in enumerate(group):
        row = _epoch_records(record, i)
        entries[id(v)]["epochs"].append(row)
        entries[id(v)]["diverged"] = bool(record["diverged"][i])
        rows[entries[id(v)]["id"]] = row
    tracker.log_epoch_by_id(rows)


def _gather(outcome: dict, group, entries: dict, store: dict, results: dict) -> None:
    """Fold one trained population's outcome into the run's records."""
    for v, final in zip(group, outcome["finals"]):
        entries[id(v)]["final"] = {k: x for k, x in final.items() if k != "diverged"}
        entries[id(v)]["diverged"] = final["diverged"]
    for key, value in outcome["store"].items():
        if key == "probs":
            store.setdefault("probs", {}).update(value)
        else:
            store[key] = value
    t, timing = results["timing"], outcome["timing"]
    if timing["compile_s"] is not None:
        t["compile_s"] = (t["compile_s"] or 0.0) + timing["compile_s"]
    t["step_s"] = max(t["step_s"], timing["step_s"])
    results["populations"][outcome["g"]].update(timing, **outcome.get("placement", {}))


