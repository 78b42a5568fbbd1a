"""``runner.py --search NAME``: a search (Optuna trials in slots, or PBT) on one compiled population.

    options -> the experiment's search space -> a driver (trials.TrialSearch or pbt.PBT)
            -> epochs of one population; after each: the driver reports, prunes, refills or exploits
            -> per epoch: an atomic checkpoint (population + driver + sampler), progress files, W&B
            -> at the end: the best trial's PrivateTest accuracy, summary.md, results.json, plots

The run directory holds ``run.json`` (the options, so ``--resume`` continues as configured),
``checkpoints/search.pt`` and, unless ``--storage`` names another, the Optuna study in
``optuna.journal``. Ctrl-C finishes the current step, checkpoints and prints the resume command.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

import optuna
import torch
from tqdm import tqdm

from fer_func import data as fer_data
from fer_func.runtime import command, machine
from fer_func.config import ConfigError
from fer_func.population import Population
from fer_func.population import precision as precisions
from fer_func.search import report
from fer_func.study import space as spaces
from fer_func.search.pbt import PBT
from fer_func.search.trials import TrialSearch, make_pruner, make_sampler
from fer_func.study import checkpoint, experiments
from fer_func.study.options import RunOptions, SearchOptions, resolve_device
from fer_func.study.report import _clean, new_run_dir
from fer_func.study.train import Interrupted, StopFlag
from fer_func.study import tracking
from fer_func.study.tracking import Tracker

# What run.json keeps so --resume continues the same search on the same data.
SAVED = ("data", "train_limit", "dtype", "profile", "precision", "experiments", "overrides", "search",
         "wandb_project", "wandb_entity")


def storage_for(url: str):
    """An Optuna storage from a URL (``sqlite:///x.db``, ``postgresql://...``) or a journal file path."""
    if "://" in url:
        return url
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(url)))


def base_table(exp: experiments.Experiment, overrides: tuple[str, ...]) -> dict:
    """The experiment's settings with ``--set`` overrides applied (grid overrides make no sense here)."""
    table, where = copy.deepcopy(exp.table), f"{exp.source}: experiment {exp.name!r}"
    for text in overrides:
        key, value = experiments.parse_override(text)
        if key.startswith("grid."):
            raise ConfigError(f"--set {text}: a search has no grid; change the [search] table or --set a setting")
        experiments._put(where, table, key, value)
    return table


class Setup:
    """Everything a search needs that follows from the options: the space, the budget, the variants."""

    def __init__(self, options: RunOptions):
        s = options.search
        catalog = experiments.load(options.experiments, options.profile_name)
        self.exp = experiments.find(catalog, s.name)
        self.space = self.exp.space()
        self.table = base_table(self.exp, options.all_overrides)
        self.where = f"{self.exp.source}: experiment {self.exp.name!r}"
        self.method = s.method or self.space.option("method")
        self.k = s.k or self.space.option("k")
        self.trials = s.trials or self.space.option("trials")
        if self.method not in spaces.METHODS:
            raise ConfigError(f"--method {self.method!r}: choose one of {', '.join(spaces.METHODS)}")
        if self.k < 2:
            raise ConfigError(f"--k {self.k}: a search needs at least 2 slots; pass --k K or set search.k")
        if self.method != "pbt" and self.trials <= self.k:
            raise ConfigError(f"--trials {self.trials}: a search needs more trials than slots (--k {self.k}); "
                              f"pass --trials N with N > K or set search.trials")
        self.seed = int(self.table.get("seed", 0))
        self.worker = s.worker
        self.study_name = s.study_name or f"fer-func-{self.exp.name}-{self.method}-s{self.seed}"
        if s.study_name is not None and self.method == "pbt":
            raise ConfigError(f"--study-name {s.study_name!r}: PBT keeps no Optuna study; drop --study-name or use "
                              f"--method tpe or random")
        self.epochs = self.variant({p.key: p.values[0] for p in self.space.params}).epochs
        self.room = spaces.corners(self.space, self.table, experiment=self.exp.name, seed=self.seed, where=self.where)

    def variant(self, values: dict, number: int = 0):
        return spaces.variant(self.table, values, experiment=self.exp.name, seed=self.seed, where=self.where)


def refuse_taken_name(setup: Setup, url: str) -> None:
    """A new search must not add its trials to another search's study (its budget, its sampler's history):
    a name ``url`` already holds is one ConfigError naming --study-name, before any run directory exists."""
    if setup.method == "pbt" or setup.study_name not in optuna.study.get_all_study_names(storage_for(url)):
        return
    n = len(optuna.load_study(study_name=setup.study_name, storage=storage_for(url)).get_trials(deepcopy=False))
    raise ConfigError(f"--study-name {setup.study_name!r}: --storage {url} already holds a study of that name "
                      f"({n} trials); continue it with --resume RUN_DIR (the run directory that started it) "
                      f"or pass another --study-name")


def make_driver(setup: Setup, storage, study_name: str, attrs=lambda number: {}):
    if setup.method == "pbt":
        return PBT(setup.space, lambda values, slot: setup.variant(values), k=setup.k, epochs=setup.epochs,
                   seed=setup.seed)
    option = setup.space.option
    pruner = make_pruner(option("pruner"), setup.epochs, option("reduction_factor"),
                         median_startup_trials=option("median_startup_trials"),
                         median_warmup_epochs=option("median_warmup_epochs"))
    # Populations sharing one study (--ray) sample with different seeds, or random search would repeat itself.
    sampler = make_sampler(setup.method, setup.seed + 1009 * setup.worker, option("n_startup_trials"))
    study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner,
                                study_name=study_name, direction="maximize", load_if_exists=True)
    return TrialSearch(setup.space, study, lambda values, number: setup.variant(values),
                       trials=setup.trials, k=setup.k, epochs=setup.epochs, attrs=attrs)


def _resolve(options: RunOptions) -> RunOptions:
    if options.resume is not None:
        saved = json.loads((Path(options.resume) / "run.json").read_text())
        saved["search"] = SearchOptions(**saved["search"])
        saved.setdefault("wandb_project", None), saved.setdefault("wandb_entity", None)  # older run.json
        saved["experiments"], saved["overrides"] = Path(saved["experiments"]), tuple(saved["overrides"])
        return dataclasses.replace(options, **saved)
    profile = experiments.profile_of(options.experiments, options.profile_name)
    return dataclasses.replace(options, profile=profile.name, train_limit=options.train_limit or profile.train_limit,
                               wandb_project=tracking.project_name(options.wandb_project),
                               wandb_entity=tracking.entity_name(options.wandb_entity))


def run(options: RunOptions, data=None, progress_bar: bool = True) -> Path:
    """The search ``options`` ask for; ``data``: the data set already loaded (a Ray worker's, from the
    object store), else loaded from ``options.data``. ``progress_bar=False``: no bars (Ray workers)."""
    started = time.perf_counter()
    options = _resolve(options)
    device = resolve_device(options.device)
    options = dataclasses.replace(options, precision=options.precision or precisions.default(device))
    print(precisions.configure(device, options.precision), flush=True)
    setup = Setup(options)
    if data is None:
        data = fer_data.load(options.data, skip_bad_rows=options.skip_bad_rows).limit_train(options.train_limit)
    experiments.check_dataset(setup.room[:1], int(data.labels["train"].shape[0]))

    if options.resume is not None:
        run_dir = Path(options.resume)
    else:
        if options.search.storage is not None and not options.search.join:
            refuse_taken_name(setup, options.search.storage)  # before the run directory exists
        run_dir = new_run_dir(options.out, f"search-{setup.exp.name}-{setup.method}")
        saved = {k: getattr(options, k) for k in SAVED}
        saved["experiments"], saved["search"] = str(saved["experiments"]), dataclasses.asdict(saved["search"])
        if setup.method != "pbt":  # PBT keeps no Optuna study, so it has no name to resume by
            saved["search"]["study_name"] = setup.study_name
        if saved["search"]["storage"] is None and setup.method != "pbt":
            saved["search"]["storage"] = str(run_dir / "optuna.journal")
        checkpoint.atomic_write(run_dir / "run.json", json.dumps(saved, indent=1).encode())
        options = _resolve(dataclasses.replace(options, resume=run_dir))
    storage = storage_for(options.search.storage) if setup.method != "pbt" else None
    tracked = options.wandb != "disabled"
    driver = make_driver(setup, storage, setup.study_name, attrs=lambda number: {
        "run_dir": str(run_dir), **({"wandb_run_id": tracking.run_id_for(run_dir.name, f"t{number}")} if tracked else {})})
    print(f"search {setup.exp.name}: {setup.method}, K={setup.k}"
          + (f", {setup.trials} trials" if setup.method != "pbt" else f", {setup.epochs} epochs")
          + f"; data: {data.describe()}; run directory: {run_dir}", flush=True)

    def build(variants):
        return Population(variants, data, device=device, compile=options.compile,
                          dtype=getattr(torch, options.dtype), precision=options.precision, room=setup.room)

    ckpt = run_dir / "checkpoints" / "search.pt"
    if ckpt.exists():
        sd = checkpoint.load(ckpt, map_location=device)
        pop = build([setup.variant(v) for v in sd["slot_values"]])
        pop.load_state_dict(sd["population"])
        driver.load_state_dict(sd["driver"])
        results = json.loads(sd["results"])
    else:
        pop = driver.start(build)
        results = {"command": command(), "started": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(device),
                   "experiment": setup.exp.name, "method": setup.method, "k": setup.k, "trials_budget": setup.trials,
                   "epochs_per_trial": setup.epochs, "profile": options.profile, "data": data.describe(),
                   "space": [dataclasses.asdict(p) for p in setup.space.params], "seed": setup.seed,
                   "population_epochs": 0, "wall_s": 0.0, "compile_s": None}
    with Tracker(options.wandb, run_dir, project=options.wandb_project, entity=options.wandb_entity,
                 group=run_dir.name) as tracker, StopFlag() as stop:
        runs = report.TrialRuns(tracker, run_dir.name)
        _loop(pop, driver, setup, runs, stop, ckpt, run_dir, results, started, progress_bar)
        report.finish(pop, driver, results, runs, time.perf_counter() - started)
    report.write(run_dir, results)
    print((run_dir / "summary.md").read_text())
    return run_dir


def _trial_bar(driver, setup, progress_bar: bool):
    """The search's bar: trials ended out of the budget (Optuna; its postfix: done, pruned, running, best
    val), or PBT's epochs."""
    pbt = setup.method == "pbt"
    return tqdm(total=setup.epochs if pbt else setup.trials, unit="epoch" if pbt else "trial", position=0,
                desc=f"search {setup.exp.name} ({setup.method})", dynamic_ncols=True, leave=True,
                disable=not progress_bar)


def _show(bar, driver, setup):
    if setup.method == "pbt":
        bar.update(driver.epoch - bar.n)
        return
    ended = [t for t in driver.trials.values() if t["state"] != "running"]
    best = max((t["best_val_acc"] for t in driver.trials.values() if t["best_val_acc"] is not None), default=None)
    bar.update(len(ended) - bar.n)
    bar.set_postfix_str(f"done {len(ended)}, pruned {sum(t['state'] == 'pruned' for t in ended)}, running "
                        f"{sum(t['state'] == 'running' for t in driver.trials.values())}"
                        + ("" if best is None else f", best val {100 * best:.1f}%"))


def _loop(pop, driver, setup, runs, stop, ckpt, run_dir, results, started, progress_bar: bool = True):
    t_prev = results["wall_s"]
    with checkpoint.BackgroundSaver() as saver, _trial_bar(driver, setup, progress_bar) as bar, \
            tqdm(total=pop.plan.steps_per_epoch, unit="step", position=1, leave=False, dynamic_ncols=True,
                 disable=not progress_bar) as steps:  # each epoch's checkpoint is written while the next trains
        _show(bar, driver, setup)
        while not driver.done:
            steps.reset()
            steps.set_description_str(f"population epoch {pop.epoch + 1}")
            record = pop.train_epoch(stop=lambda: stop.set, progress=lambda done: steps.update(done - steps.n))
            if record is None:  # Ctrl-C mid-epoch: the population pauses exactly there
                saver.wait()
                checkpoint.save(ckpt, _payload(pop, driver, results))
                raise Interrupted.at(run_dir)
            results["compile_s"] = results["compile_s"] or pop.timing["compile_s"]
            runs.log(driver, pop, record)
            events = driver.after_epoch(pop, record)
            runs.after(driver, events)
            results["population_epochs"] = pop.epoch
            results["wall_s"] = t_prev + time.perf_counter() - started
            report.progress(driver, results)
            _show(bar, driver, setup)
            bar.write(report.epoch_line(driver, pop, record))
            saver.save(ckpt, _payload(pop, driver, results))
            report.write_progress(run_dir, results)
            if stop.set:
                saver.wait()  # on disk before the run says how to resume
                raise Interrupted.at(run_dir)


def _payload(pop, driver, results) -> dict:
    # results as JSON text: it holds non-tensor objects (torch's version string) weights_only refuses.
    return {"population": pop.state_dict(), "driver": driver.state_dict(), "results": json.dumps(_clean(results)),
            "slot_values": [dict(v.hparams) for v in pop.variants]}
