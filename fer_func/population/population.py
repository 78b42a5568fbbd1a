"""A population: K variants of one architecture trained together, one compiled step for all.

    pop = Population(variants, data, device="cuda")
    for epoch in range(pop.plan.epochs):
        record = pop.train_epoch()      # per-variant train/val metrics, read once per epoch
    final = pop.finish()                # best-epoch params evaluated on the held-out test split

State of K variants is one stacked pytree (leading axis K). ``mode="vmap"`` (default) runs
``vmap(step)`` compiled as one graph; ``mode="loop"`` runs the same single-variant step once per
variant -- a solo run of each, used by the equivalence tests and the benchmarks.

The class holds the state and the order of events; the pieces live beside what they use: state.py
(a variant's initial carry and hp), programs.py (the cached step and eval programs), epoch.py (the
host's end of an epoch: validation, schedules, best networks, early stopping), evaluate.py and
views.py (evaluation and test-time augmentation over the population's state), slots.py and
compaction.py (pure functions over the stacked state).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from fer_func import optim, prng, tree
from fer_func.config import VariantConfig
from fer_func.data.augment import class_weights
from fer_func.data.dataset import FERData
from fer_func.population import compaction, slots, state, views
from fer_func.population import evaluate as evaluation
from fer_func.population import precision as precisions
from fer_func.population.cv import Folds
from fer_func.population.epoch import end_epoch
from fer_func.population.evaluate import even_chunk, per_class
from fer_func.population.plan import make_plan
from fer_func.population.programs import fold_eval_program, programs
from fer_func.population.step import INIT_STREAM


def sample_mean_class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Inverse class frequency (``data.class_weights``) rescaled to average 1 over the training samples,
    so a class-weighted loss keeps the unweighted loss's scale (and the learning rate its meaning)."""
    w = class_weights(labels).to(torch.float64)
    return w / w[labels].mean()


class Population:
    def __init__(self, variants: list[VariantConfig], data: FERData, *, device="cpu", dtype=torch.float32,
                 compile: bool | str = True, mode: str = "vmap", eval_chunk: int | None = None, micro_batch: int | None = None,
                 precision: str = "fp32", cuda_graphs: bool = False, room: list[VariantConfig] = ()):
        if mode not in ("vmap", "loop"):
            raise ValueError(f"mode = {mode!r}: must be 'vmap' or 'loop'")
        self.variants, self.device, self.dtype, self.mode = list(variants), torch.device(device), dtype, mode
        self.compile = compile  # True (inductor), a dynamo backend name, or False: every program of it compiles so
        self.precision = precisions.check(precision)
        # CUDA graphs replay the compiled step with no launch overhead; elsewhere there is nothing to replay.
        self.cuda_graphs = bool(cuda_graphs and compile is True and self.device.type == "cuda")
        self.data = data.to(self.device)
        self.train_x, self.train_y = self.data.split("train")
        # ``room``: variants a slot may take later (slots.py; a search's trials) without recompiling.
        self.room = list(room)
        # cv = k: per-variant training and validation index sets (cv.py); the step still gathers batches.
        self.folds = Folds(self.train_y, self.variants, self.device) if self.variants[0].cv else None
        num_train = self.folds.num_train if self.folds is not None else int(self.train_y.shape[0])
        self.plan = make_plan(self.variants, num_train, micro_batch, room=self.room)
        self.model = self.plan.model
        self.class_weight = sample_mean_class_weights(self.train_y).to(dtype)
        # The rules the optimizer state holds, in a fixed order, so a later member's state stacks.
        self._rule_configs = [v.optimizer for v in self.room + self.variants]
        self.optimizers = optim.from_configs([v.optimizer for v in self.variants], [v.optimizer for v in self.room])
        self.epoch, self.step_in_epoch, self._epoch_s = 0, 0, 0.0
        # The population epoch at which each slot's current variant started: its own epoch count
        # (data order, best epoch) is ``epoch - slot_start``. All zero unless a slot was refilled.
        self.slot_start = np.zeros(len(self.variants), dtype=np.int64)
        # Early stopping, decided on the host once per epoch from the metrics read back anyway:
        # epochs since the last gain (> min_delta), and the own epoch at which a slot stopped (-1: running).
        self.since_gain = np.zeros(len(self.variants), dtype=np.int64)
        self.stopped_epoch = np.full(len(self.variants), -1, dtype=np.int64)
        self.history: list[dict] = []
        self.timing = {"compile_s": 0.0, "step_s": 0.0, "steps": 0}
        # Which variants the carry and hp hold, in order: all of them until compact() drops the ended
        # ones, whose final states wait in _parked (variant index -> member). Everything indexed by
        # variant (variants, best, history records, early-stopping counters) stays K-wide.
        self.live = np.arange(len(self.variants))
        self._parked: dict[int, dict] = {}
        self._new_k, self._epoch_compile_s = False, 0.0  # the next step runs at a K not run before; compile time this epoch
        self._build_state()
        if self.folds is not None:
            self._fold_val = self.folds.val_split(self.train_x, self.train_y)
        if eval_chunk is None:  # the evaluated splits in equal chunks: 3,589 images are 8 x 456, not 8 x 512
            sizes = [int(self.data.labels[s].shape[0]) for s in ("val", "test") if s in self.data.labels]
            eval_chunk = even_chunk(sizes + ([int(self._fold_val[1].shape[1])] if self.folds is not None else []))
        rules = tuple(dict.fromkeys(c.rule for c in self._rule_configs))
        p = self.plan
        self._step, self._eval = programs(p.model, p.micro_batch, p.accumulate, p.augment, p.varying_dropout, rules,
                                          dtype, mode, compile, eval_chunk, self.precision, self.cuda_graphs,
                                          self.optimizers[0].update, self.device.type)
        self.eval_chunk_size = eval_chunk
        if self.folds is not None:
            self._fold_starts = torch.arange(0, self._fold_val[1].shape[1], eval_chunk, device=self.device)
            self._eval_folds = fold_eval_program(p.model, dtype, mode, compile, eval_chunk, self.precision,
                                                 self.cuda_graphs, self.device.type)
        self._js = torch.arange(self.plan.steps_per_epoch, device=self.device)
        # Chunk offsets and split sizes as device tensors made once: evaluation copies nothing from the host.
        self._eval_index = {split: (torch.arange(0, int(y.shape[0]), eval_chunk, device=self.device),
                                    torch.tensor(int(y.shape[0]), device=self.device))
                            for split, y in self.data.labels.items()}

    # --- state ---------------------------------------------------------------------------------

    def _init_models(self, vectorized: bool | None = None) -> list[tuple[dict, dict]]:
        return state.init_models(self.model, self.variants, self.device, vectorized)

    def _init_variant(self, i: int, v: VariantConfig, params: dict, model_state: dict):
        return state.init_variant(self.plan, self.optimizers[i], i, v, params, model_state, self.dtype, self.device)

    def _build_state(self):
        models = self._init_models()
        carries, hps = zip(*(self._init_variant(i, v, *models[i]) for i, v in enumerate(self.variants)))
        self.carry, self.hp = tree.stack(list(carries)), tree.stack(list(hps))
        self.best = state.init_best(self.carry, len(self.variants), self.device)

    def member(self, i: int) -> dict:
        """Variant ``i``'s carried state, exactly what a solo run of it would hold.

        In a mixed-optimizer population the state is a ``select`` over rules; the member keeps only
        its active rule's state, which is what a solo run with that optimizer carries.
        """
        m = tree.clone(self._parked[i] if i in self._parked else tree.index(self.carry, self._position(i)))
        if "choices" in m["opt_state"]:
            m["opt_state"] = optim.active_state(self.optimizers[i], m["opt_state"])
        return m

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """(K, N) data order of every variant for population epoch ``epoch``: a function of the
        variant's seed and its own epoch count only, so a refilled slot draws what a solo run would."""
        if self.folds is not None:
            return self.folds.epoch_order(self.hp["data_key"], [epoch - int(s) for s in self.slot_start])
        n = self.plan.num_train
        return torch.stack([prng.permutation(prng.fold_in(k, epoch - int(s)), n)
                            for k, s in zip(self.hp["data_key"], self.slot_start[self.live])])

    # --- slots (a search's trials come and go; fer_func/population/slots.py) ---------------------

    def assign(self, i: int, variant: VariantConfig):
        """Slot ``i`` starts ``variant`` afresh: parameters from its seed's init stream, fresh optimizer,
        schedule and counters, no best epoch yet. Call between epochs. Nothing recompiles: the
        variant must fit the population's static structure (its own variants plus ``room``)."""
        self._require_whole("assign")
        self._check_fits(variant)
        self.variants[i] = variant
        self.optimizers[i] = self._optimizer_for(variant)
        key = prng.fold_in(prng.key(variant.seed), INIT_STREAM).to(self.device)
        carry, hp = self._init_variant(i, variant, *self.model.init(key))
        self.carry, self.hp = slots.put(self.carry, i, carry), slots.put(self.hp, i, hp)
        self.best = {"params": slots.put(self.best["params"], i, carry["params"]),
                     "model_state": slots.put(self.best["model_state"], i, carry["model_state"]),
                     "val_acc": self.best["val_acc"].index_fill(0, torch.tensor([i], device=self.device), -1.0),
                     "epoch": self.best["epoch"].index_fill(0, torch.tensor([i], device=self.device), -1)}
        self.slot_start[i] = self.epoch
        self.since_gain[i], self.stopped_epoch[i] = 0, -1

    def copy_slots(self, src: list[int]):
        """Slot ``j`` takes slot ``src[j]``'s whole state (weights, BN statistics, optimizer and schedule
        state, counters, best checkpoint, seed streams, variant config): PBT's exploit, as one gather
        over the K axis on the device. ``src[j] == j`` keeps a slot as it is."""
        self._require_whole("copy_slots")
        index = torch.as_tensor(src, dtype=torch.int64, device=self.device)
        self.carry, self.hp, self.best = (slots.gather(t, index) for t in (self.carry, self.hp, self.best))
        self.variants = [self.variants[s] for s in src]
        self.optimizers = [self.optimizers[s] for s in src]
        self.slot_start = self.slot_start[np.asarray(src)]
        self.since_gain, self.stopped_epoch = self.since_gain[np.asarray(src)], self.stopped_epoch[np.asarray(src)]

    def set_hparams(self, i: int, variant: VariantConfig):
        """Slot ``i`` keeps its weights and training state and continues under ``variant``'s
        hyperparameters (PBT's explore). ``variant`` must keep the slot's optimizer rule."""
        self._require_whole("set_hparams")
        self._check_fits(variant)
        if variant.optimizer.rule != self.variants[i].optimizer.rule:
            raise ValueError(f"set_hparams: slot {i} runs {self.variants[i].optimizer.rule}, not "
                             f"{variant.optimizer.rule}; a running slot keeps its rule (use assign to start afresh)")
        self.variants[i], self.optimizers[i] = variant, self._optimizer_for(variant)
        old_carry, old_hp = tree.index(self.carry, i), tree.index(self.hp, i)
        fresh_carry, fresh_hp = self._init_variant(i, variant, old_carry["params"], old_carry["model_state"])
        carry, hp = slots.with_hparams_of(old_carry, old_hp, fresh_carry, fresh_hp)
        self.carry, self.hp = slots.put(self.carry, i, carry), slots.put(self.hp, i, hp)

    def freeze(self, i: int):
        """Slot ``i`` trains no more (its state and best checkpoint stay as they are)."""
        if i in self._parked:
            return
        mask = torch.as_tensor(self.live == i, device=self.device)
        self.hp = slots.freeze(self.hp, mask)

    # --- compaction (fer_func/population/compaction.py) ------------------------------------------

    def ended(self) -> np.ndarray:
        """(K,) bool: the variant diverged or stopped early; it trains no more."""
        return self.diverged() | (self.stopped_epoch >= 0)

    def diverged(self) -> np.ndarray:
        """(K,) bool: the variant's training went non-finite (a parked variant keeps its flag)."""
        out = np.zeros(len(self.variants), dtype=bool)
        out[self.live] = self.carry["diverged"].cpu().numpy()
        for i, m in self._parked.items():
            out[i] = bool(m["diverged"])
        return out

    def compact(self) -> bool:
        """Between epochs: drop the ended variants from the computed carry, so the step runs at the
        smaller K (compiled, or loaded, once for it). Every number a live variant computes stays
        the same; an ended one keeps its best network, history and final state. Returns whether
        anything was dropped. A search's slots and cross-validation folds are never compacted."""
        if self.step_in_epoch or self.folds is not None or self.room:
            return False
        keep = compaction.live_positions(self.ended()[self.live])
        if len(keep) in (0, len(self.live)):
            return False
        self.carry, self.hp, parked = compaction.split(self.carry, self.hp, keep)
        self._parked.update({int(self.live[j]): m for j, m in parked.items()})
        self.live, self._new_k = self.live[keep], True
        return True

    def _position(self, i: int) -> int:
        return int(np.flatnonzero(self.live == i)[0])

    def _require_whole(self, what: str):
        if len(self.live) != len(self.variants):
            raise RuntimeError(f"{what}: this population was compacted to {len(self.live)} of {len(self.variants)} "
                               "variants; slots can be changed only in a whole population")

    def slot_epoch(self, i: int) -> int:
        """Epochs slot ``i``'s current variant has completed."""
        return self.epoch - int(self.slot_start[i])

    def _optimizer_for(self, variant: VariantConfig):
        return optim.from_configs([variant.optimizer], self._rule_configs)[0]

    def _check_fits(self, variant: VariantConfig):
        fits = make_plan(self.variants + [variant], self.plan.num_train, self.plan.micro_batch, room=self.room)
        if (fits.varying_dropout, fits.augment, fits.accumulate) != (self.plan.varying_dropout, self.plan.augment,
                                                                     self.plan.accumulate):
            raise ValueError(f"variant {variant.hparams or variant.experiment!r} does not fit this population's "
                             f"compiled structure (dropout rates that vary, augmentation settings, batch size); "
                             f"list such variants in Population(room=...)")
        rules = {c.rule for c in self._rule_configs}
        if variant.optimizer.rule not in rules:
            raise ValueError(f"variant {variant.hparams or variant.experiment!r}: optimizer rule "
                             f"{variant.optimizer.rule} is not among the population's {sorted(rules)}; "
                             f"list it in Population(room=...)")

    # --- training ------------------------------------------------------------------------------

    def step(self, perm: torch.Tensor, j: torch.Tensor):
        """One compiled micro-step of every variant (``perm`` from :meth:`epoch_order`, ``j`` a 0-d tensor)."""
        if self.cuda_graphs:  # the previous step's outputs are this step's inputs, not live graph outputs
            torch.compiler.cudagraph_mark_step_begin()
        if self.mode == "vmap":
            self.carry = self._step(self.carry, self.hp, self.train_x, self.train_y, self.class_weight, perm, j)
        else:
            outs = [self._step(tree.index(self.carry, i), tree.index(self.hp, i), self.train_x, self.train_y,
                               self.class_weight, perm[i], j) for i in range(len(self.live))]
            self.carry = tree.stack(outs)

    def train_epoch(self, progress: Callable[[int], None] | None = None,
                    stop: Callable[[], bool] | None = None) -> dict | None:
        """One epoch of every variant; returns per-variant numpy metrics (one host sync).

        ``stop()`` is polled after each step; when it says so the epoch pauses there and ``None`` is
        returned. The position is part of :meth:`state_dict`, so a checkpoint taken then resumes
        mid-epoch exactly (same data order, same keys, same metric sums).
        """
        t0 = time.perf_counter()
        perm = self.epoch_order(self.epoch)
        for j in range(self.step_in_epoch, self.plan.steps_per_epoch):
            if self.timing["steps"] == 0 or self._new_k:  # compiles (or loads) the program for this K: timed apart
                t = time.perf_counter()
                self.step(perm, self._js[j])
                self._sync()
                took = time.perf_counter() - t
                self.timing["compile_s"] = took if self.timing["steps"] == 0 else self.timing["compile_s"] + took
                self._epoch_compile_s, self._new_k = self._epoch_compile_s + took, False
            else:
                self.step(perm, self._js[j])
            self.timing["steps"] += 1
            self.step_in_epoch = j + 1
            if progress is not None:
                progress(j + 1)
            if stop is not None and stop() and j + 1 < self.plan.steps_per_epoch:
                self._sync()
                self._epoch_s += time.perf_counter() - t0
                return None
        self._sync()
        train_s = self._epoch_s + time.perf_counter() - t0
        self.step_in_epoch, self._epoch_s = 0, 0.0
        return self._end_epoch(train_s)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _end_epoch(self, train_s: float) -> dict:
        record = end_epoch(self, train_s)
        # Steady-state step time: a step that compiled (a process's first, or the first after compact())
        # is reported apart.
        compiled_here = self._epoch_compile_s > 0
        self.epoch += 1
        steps = self.plan.steps_per_epoch - compiled_here
        self.timing["step_s"] = (train_s - self._epoch_compile_s) / max(steps, 1)
        self._epoch_compile_s = 0.0
        return record

    @property
    def all_stopped(self) -> bool:
        """Every variant has stopped early or diverged: further epochs would change nothing."""
        return bool(np.all(self.ended()))

    # --- evaluation ----------------------------------------------------------------------------

    def evaluate(self, split: str, params=None, model_state=None, probs: bool = False) -> dict:
        """Loss, accuracy and confusion matrix per variant on ``split``; evaluate.evaluate."""
        return evaluation.evaluate(self, split, params, model_state, probs)

    def evaluate_views(self, split: str, *, params=None, model_state=None, tta=None, members=None) -> dict:
        """Class probabilities, test-time augmentation and an ensemble on ``split``; views.evaluate_views."""
        return views.evaluate_views(self, split, params=params, model_state=model_state, tta=tta, members=members)

    def finish(self, with_probs: bool = False):
        """Per variant: best-epoch test metrics, confusion matrix and per-class precision/recall/F1.
        ``with_probs``: ``(finals, probs)``, with the best networks' test probabilities (K, N, 7) from the
        same pass (ensembles of them need no other)."""
        test = self.evaluate("test", self.best["params"], self.best["model_state"], probs=with_probs)
        # The best networks' validation accuracy is the one their epoch recorded when it kept them: the same
        # program on the same parameters. Re-evaluating only matters for a slot that never kept a network
        # (every epoch non-finite); for every other run that saves one pass over the validation split.
        val_acc = self.best["val_acc"].cpu().numpy()
        if (val_acc < 0).any():
            val_acc = self.evaluate("val", self.best["params"], self.best["model_state"])["acc"]
        out, diverged = [], self.diverged()
        for i, v in enumerate(self.variants):
            best_epoch = int(self.best["epoch"][i])
            rec = self.history[best_epoch + int(self.slot_start[i])] if best_epoch >= 0 else self.history[-1]
            train_acc = float(rec["train_acc"][i])
            out.append({"train_acc": train_acc, "val_acc": float(val_acc[i]), "test_acc": float(test["acc"][i]),
                        "test_loss": float(test["loss"][i]), "best_epoch": best_epoch,
                        "gap": train_acc - float(val_acc[i]), "diverged": bool(diverged[i]),
                        "stopped_epoch": int(self.stopped_epoch[i]) if self.stopped_epoch[i] >= 0 else None,
                        "confusion": test["confusion"][i].tolist(), "per_class": per_class(test["confusion"][i])})
        return (out, test["probs"]) if with_probs else out

    # --- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: tensors, plain numbers and lists (``weights_only`` loadable)."""
        history = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in self.history]
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "epoch_s": self._epoch_s,
                "slot_start": self.slot_start.tolist(), "hp": self.hp,
                "early": {"since_gain": self.since_gain.tolist(), "stopped_epoch": self.stopped_epoch.tolist()},
                "live": self.live.tolist(), "parked": [[i, m] for i, m in sorted(self._parked.items())],
                "carry": self.carry, "best": self.best, "history": history, "timing": dict(self.timing)}

    def load_state_dict(self, sd: dict):
        self.epoch, self.step_in_epoch, self._epoch_s = sd["epoch"], sd["step_in_epoch"], sd["epoch_s"]
        self.slot_start = np.asarray(sd["slot_start"], dtype=np.int64)
        self.history = [{k: (np.asarray(v) if isinstance(v, list) else v) for k, v in r.items()} for r in sd["history"]]
        # the first step and eval after a resume compile again
        self.timing = {**{k: v for k, v in sd["timing"].items() if k != "eval_compile_s"}, "steps": 0}
        # Checkpoints before 2026-12-08 (runs in progress then) held the lr in the optimizer state too;
        # the schedule state holds it now, so a resume drops the copy.
        carry = tree.to(sd["carry"], self.device)
        self.carry = {**carry, "opt_state": optim.without_hparams(carry["opt_state"], "lr")}
        self.best = tree.to(sd["best"], self.device)
        self.hp = tree.to(sd["hp"], self.device)  # slots a search froze or refilled
        self.since_gain = np.asarray(sd["early"]["since_gain"], dtype=np.int64)
        self.stopped_epoch = np.asarray(sd["early"]["stopped_epoch"], dtype=np.int64)
        self.live = np.asarray(sd["live"], dtype=np.int64)  # compacted: fewer than the variants
        self._parked = {int(i): {**m, "opt_state": optim.without_hparams(m["opt_state"], "lr")}
                        for i, m in ((int(i), tree.to(m, self.device)) for i, m in sd["parked"])}

