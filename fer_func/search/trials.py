"""Optuna-driven search in slots: K trials train at once, a stopped trial's slot takes the next one.

    driver = TrialSearch(space, study, make_variant, trials=30, k=8, epochs=5)
    pop = driver.start(build_population)         # asks K trials, builds the population around them
    while not driver.done:
        record = pop.train_epoch()
        driver.after_epoch(pop, record)          # report -> prune / finish -> tell -> ask -> refill

Optuna proposes (``study.ask`` with the space's distributions: TPE, random, any sampler) and
decides what stops (``trial.report`` each epoch, then the study's pruner). The population only
changes which trial a slot holds, in place on the device (``Population.assign``), so nothing
recompiles. A trial's value is its best validation accuracy over its epochs; a trial that
diverges is pruned at once. Its user attributes (what optuna-dashboard shows beside the params) hold
``slot``, whatever ``attrs(number)`` adds (the run directory, the W&B run id) and, once it ends,
``test_acc``: PrivateTest accuracy of its best-epoch weights (reported, never used to choose). The budget is ``trials`` trials in the study (a shared ``--storage``
counts every process's); when none is left a slot freezes, and the search ends when every slot has.
"""
from __future__ import annotations

import pickle

import optuna
import torch

from fer_func import tree
from fer_func.config import ConfigError
from fer_func.study.space import Space

# Optuna logs every trial at INFO; the run's own progress line and summary say the same, once.
optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_sampler(method: str, seed: int, n_startup_trials: int = 10) -> optuna.samplers.BaseSampler:
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: running trials count as "bad so far", so K trials asked together spread out.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=n_startup_trials)


def make_pruner(name: str, epochs: int, reduction_factor: int, *, median_startup_trials: int = 5,
                median_warmup_epochs: int = 0) -> optuna.pruners.BasePruner:
    if name == "median":  # a trial whose epoch is below the median of earlier trials at that epoch stops
        return optuna.pruners.MedianPruner(n_startup_trials=median_startup_trials, n_warmup_steps=median_warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=reduction_factor)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=reduction_factor)
    return optuna.pruners.NopPruner()


class BudgetSpent(ConfigError):
    """The study already holds the whole trial budget: nothing for this population to run (a local
    search's mistake, or, with --ray, a population that started after the others had asked for it all)."""


class TrialSearch:
    def __init__(self, space: Space, study: optuna.Study, make_variant, *, trials: int, k: int, epochs: int,
                 attrs=lambda number: {}):
        self.space, self.study, self.make_variant, self.attrs = space, study, make_variant, attrs
        self.n_trials, self.k, self.epochs = trials, k, epochs
        self.slot_trial: list[int | None] = [None] * k   # trial number each slot holds (None: frozen)
        self.trials: dict[int, dict] = {}                # trial number -> its record (report.py reads these)
        self._live: dict[int, optuna.trial.Trial] = {}
        self.champion = None                             # best finished trial: number, params, model_state

    # --- Optuna ------------------------------------------------------------------------------

    def _budget_left(self) -> bool:
        return len(self.study.get_trials(deepcopy=False)) < self.n_trials

    def _ask(self, slot: int, epoch: int):
        """The next trial for ``slot``, or None when the budget is spent. Several processes may share the
        study (--ray, or one --storage): two can pass ``_budget_left`` together, so the study-wide trial
        number, which the storage hands out atomically, decides; a trial past the budget is told FAIL."""
        if not self._budget_left():
            return None
        trial = self.study.ask(self.space.distributions)
        if trial.number >= self.n_trials:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return None
        variant = self.make_variant(trial.params, trial.number)
        for key, value in {"slot": slot, **self.attrs(trial.number)}.items():
            trial.set_user_attr(key, value)
        self._live[trial.number] = trial
        self.trials[trial.number] = {"number": trial.number, "params": dict(trial.params), "slot": slot,
                                     "started_epoch": epoch, "state": "running", "epochs": [],
                                     "best_val_acc": None, "best_epoch": None, "variant": variant}
        self.slot_trial[slot] = trial.number
        return variant

    # --- the loop ----------------------------------------------------------------------------

    def start(self, build_population):
        """Ask the first K trials and build the population (``build_population(variants)``) around them."""
        variants = []
        for slot in range(self.k):
            variant = self._ask(slot, 0)
            if variant is None:
                break
            variants.append(variant)
        if not variants:
            raise BudgetSpent(f"the study already holds {self.n_trials} trials: nothing left to run "
                              f"(raise --trials or use another --storage)")
        pop = build_population(variants)
        for slot in range(len(variants), self.k):  # a budget smaller than K: the spare slots never train
            pop.freeze(slot)
        return pop

    @property
    def done(self) -> bool:
        return all(t is None for t in self.slot_trial)

    def after_epoch(self, pop, record: dict) -> list[dict]:
        """Report each running trial's epoch, stop the ones the pruner (or divergence, or the last
        epoch) ends, tell Optuna, and refill their slots. Returns the finished trials' records."""
        finished, tests = [], []  # tests: every slot's best-epoch PrivateTest accuracy, once per epoch, when needed
        best_acc = pop.best["val_acc"].cpu()
        for slot, number in enumerate(self.slot_trial):
            if number is None:
                continue
            rec, trial = self.trials[number], self._live[number]
            epoch = pop.slot_epoch(slot)  # epochs this trial has completed
            row = {k: float(record[k][slot]) for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr")}
            rec["epochs"].append({"epoch": epoch - 1, **row})
            rec["best_val_acc"], rec["best_epoch"] = float(best_acc[slot]), int(pop.best["epoch"][slot])
            diverged = bool(record["diverged"][slot])
            trial.report(row["val_acc"] if not diverged else 0.0, epoch)
            if diverged or epoch >= self.epochs or trial.should_prune():
                state = "complete" if epoch >= self.epochs and not diverged else ("diverged" if diverged else "pruned")
                if not tests:  # before any slot is refilled: one eval of every slot's best weights
                    tests.append(pop.evaluate("test", pop.best["params"], pop.best["model_state"])["acc"])  # numpy (K,)
                rec["test_acc"] = float(tests[0][slot]) if rec["best_epoch"] >= 0 else None
                trial.set_user_attr("test_acc", rec["test_acc"])
                self._finish(pop, slot, number, state)
                finished.append(rec)
                variant = self._ask(slot, pop.epoch)
                if variant is not None:
                    pop.assign(slot, variant)
                else:
                    pop.freeze(slot)
                    self.slot_trial[slot] = None
        return finished

    def stop_all(self, pop):
        """End the search now (a device-time budget ran out): running trials stop as pruned, at the
        epoch they reached, and their slots freeze."""
        for slot, number in enumerate(self.slot_trial):
            if number is not None:
                self._finish(pop, slot, number, "pruned")
                pop.freeze(slot)
                self.slot_trial[slot] = None

    def _finish(self, pop, slot: int, number: int, state: str):
        rec = self.trials[number]
        if not rec["epochs"]:  # asked, never trained (the budget ended first): Optuna's FAIL, no value
            rec["state"] = "cancelled"
            self.study.tell(self._live.pop(number), state=optuna.trial.TrialState.FAIL)
            return
        rec["state"] = state
        value = max(rec["best_val_acc"], 0.0)
        if state == "complete":
            self.study.tell(self._live.pop(number), value)
        else:  # Optuna records a pruned trial's last reported value as its value
            self.study.tell(self._live.pop(number), state=optuna.trial.TrialState.PRUNED)
        if self.champion is None or rec["best_val_acc"] > self.trials[self.champion["number"]]["best_val_acc"]:
            # Keep the best trial's best-epoch weights: its slot is about to hold another trial.
            self.champion = {"number": number, "params": tree.clone(tree.index(pop.best["params"], slot)),
                             "model_state": tree.clone(tree.index(pop.best["model_state"], slot))}

    def best_trial(self) -> dict | None:
        return None if self.champion is None else self.trials[self.champion["number"]]

    def best_weights(self):
        return None if self.champion is None else (self.champion["params"], self.champion["model_state"])

    # --- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Plain data (``weights_only`` loadable). The sampler (its random state) travels pickled in a
        uint8 tensor; the trials themselves are in the study's storage."""
        sampler = torch.frombuffer(bytearray(pickle.dumps(self.study.sampler)), dtype=torch.uint8)
        trials = {str(n): {k: v for k, v in r.items() if k != "variant"} for n, r in self.trials.items()}
        return {"slot_trial": [-1 if t is None else t for t in self.slot_trial], "trials": trials,
                "live": {str(n): t._trial_id for n, t in self._live.items()}, "sampler": sampler,
                "champion": self.champion}

    def load_state_dict(self, sd: dict):
        # The sampler carries its RNG and TPE's bookkeeping: restoring it makes the next ask the one an
        # uninterrupted search would have made.
        self.study.sampler = pickle.loads(sd["sampler"].numpy().tobytes())
        self.slot_trial = [None if t < 0 else int(t) for t in sd["slot_trial"]]
        self.trials = {int(n): dict(r) for n, r in sd["trials"].items()}
        for n, r in self.trials.items():
            r["variant"] = self.make_variant(r["params"], n)
        # A running trial is a handle on its row in the storage (Optuna has no public "reopen").
        self._live = {int(n): optuna.trial.Trial(self.study, int(tid)) for n, tid in sd["live"].items()}
        self.champion = sd["champion"]
