"""A population: K variants of one architecture trained together, one compiled step for all.

    pop = Population(variants, data, device="cuda")
    for epoch in range(pop.plan.epochs):
        record = pop.train_epoch()      # per-variant train/val metrics, read once per epoch
    final = pop.finish()                # best-epoch params evaluated on the held-out test split

State of K variants is one stacked pytree (leading axis K). ``mode="vmap"`` (default) runs
``vmap(step)`` compiled as one graph; ``mode="loop"`` runs the same single-variant step once per
variant -- a solo run of each, used by the equivalence tests and the benchmarks.
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
from fer_func.optim import schedules
from fer_func.optim.flat import FLAT, Ravel
from fer_func.population.evaluate import even_chunk, per_class
from fer_func.population import precision as precisions
from fer_func.population import compaction, slots, views
from fer_func.population.cv import Folds
from fer_func.population.plan import dropout_rates, make_plan
from fer_func.population.programs import fold_eval_program, programs
from fer_func.population.step import DATA_STREAM, INIT_STREAM, MEAN, NOISE_STREAM, STD, all_finite


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
        """Every variant's initial (params, model_state) from its seed's init stream, on the device.

        On an accelerator all K draw at once under ``vmap`` (a few large kernels instead of K times
        every layer's); on a CPU one variant at a time is faster, as the draws then run in
        cache-sized chunks. The numbers are the same either way (tests check it bit for bit).
        """
        keys = torch.stack([prng.fold_in(prng.key(v.seed), INIT_STREAM) for v in self.variants]).to(self.device)
        if vectorized is None:
            vectorized = self.device.type != "cpu"
        if vectorized:
            params, states = torch.func.vmap(self.model.init)(keys)
            return [(tree.index(params, i), tree.index(states, i)) for i in range(len(self.variants))]
        return [self.model.init(k) for k in keys]

    def _init_variant(self, i: int, v: VariantConfig, params: dict, model_state: dict):
        root = prng.key(v.seed).to(self.device)
        params, model_state = tree.to(params, self.device, self.dtype), tree.to(model_state, self.device, self.dtype)
        n_micro = v.batch_size // self.plan.micro_batch
        updates_per_epoch = self.plan.active_steps[i] // n_micro
        sched = schedules.init(v.schedule, v.optimizer.lr, v.epochs, updates_per_epoch, self.dtype, self.device)
        opt_state = optim.with_hparams(self.optimizers[i].init(params), lr=schedules.lr(sched))
        zero = lambda dt=self.dtype: torch.zeros((), dtype=dt, device=self.device)
        carry = {"params": params, "model_state": model_state, "opt_state": opt_state, "sched": sched,
                 "noise_key": prng.fold_in(root, NOISE_STREAM), "step": zero(torch.int64),
                 "diverged": torch.zeros((), dtype=torch.bool, device=self.device),
                 "diverged_step": torch.full((), -1, dtype=torch.int64, device=self.device),
                 "metrics": {"loss_sum": zero(), "correct": zero(), "count": zero()}}
        if self.plan.accumulate:
            carry["grad_acc"] = Ravel(params).flat(tree.tree_map(torch.zeros_like, params))  # {"flat": zeros}
            carry["micro"] = zero(torch.int64)
        as_t = lambda x, dt: torch.tensor(x, dtype=dt, device=self.device)
        dropout = {k: as_t(rate, self.dtype) for k, rate in dropout_rates(v, self.plan.varying_dropout)}
        hp = {"active_steps": as_t(self.plan.active_steps[i], torch.int64), "n_micro": as_t(n_micro, torch.int64),
              "augment": as_t(v.augment.enabled, torch.bool), "class_weighted": as_t(v.class_weighted, torch.bool),
              "dropout": dropout, "data_key": prng.fold_in(root, DATA_STREAM)}
        return carry, hp

    def _build_state(self):
        models = self._init_models()
        carries, hps = zip(*(self._init_variant(i, v, *models[i]) for i, v in enumerate(self.variants)))
        self.carry, self.hp = tree.stack(list(carries)), tree.stack(list(hps))
        self.best = {"params": tree.clone(self.carry["params"]), "model_state": tree.clone(self.carry["model_state"]),
                     "val_acc": torch.full((len(self.variants),), -1.0, dtype=torch.float64, device=self.device),
                     "epoch": torch.full((len(self.variants),), -1, dtype=torch.int64, device=self.device)}

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
        # The step checks loss and gradients only (step.py), so an update that overflowed is committed.
        # One reduction per epoch catches it: the variant is diverged from here on and keeps the best
        # parameters it had, never non-finite ones.
        finite = torch.func.vmap(all_finite)({"params": self.carry["params"], "state": self.carry["model_state"]})
        newly = ~finite & ~self.carry["diverged"]
        self.carry["diverged"] = self.carry["diverged"] | newly
        self.carry["diverged_step"] = torch.where(newly, self.carry["step"], self.carry["diverged_step"])
        mt = self.carry["metrics"]
        count = mt["count"].clamp(min=1)
        val = self.evaluate("val")
        pick = torch.func.vmap(tree.where)
        # Plateau watches validation accuracy in mode "max" and validation loss in mode "min" (torch's
        # convention for a loss); feeding accuracy to "min" would cut the rate while it improves.
        as_t = lambda x: torch.as_tensor(x, dtype=self.dtype, device=self.device)
        watched = torch.where(self.carry["sched"]["mode_max"], as_t(val["acc"]), as_t(val["loss"]))
        stepped = torch.func.vmap(schedules.after_epoch)(self.carry["sched"], watched)
        # A diverged or early-stopped variant is frozen: its schedule does not move either.
        live = torch.as_tensor(self.live, device=self.device)
        frozen = self.carry["diverged"] | torch.as_tensor(self.stopped_epoch[self.live] >= 0, device=self.device)
        self.carry["sched"] = pick(frozen, self.carry["sched"], stepped)
        # The best networks are kept for every variant (K-wide); the computed ones update their rows.
        best_before = self.best["val_acc"].cpu().numpy()
        acc = torch.as_tensor(val["acc"], device=self.device)
        improved = (acc > self.best["val_acc"][live]) & finite
        for key in ("params", "model_state"):
            kept = slots.gather(self.best[key], live)
            self.best[key] = slots.scatter(self.best[key], live, pick(improved, self.carry[key], kept))
        own_epoch = torch.as_tensor(self.epoch - self.slot_start[self.live], device=self.device)
        for key, new in (("val_acc", acc), ("epoch", own_epoch)):
            self.best[key] = self.best[key].index_copy(0, live, torch.where(improved, new, self.best[key][live]))
        # Per-variant numbers, K-wide: an ended variant that compaction parked records what its frozen
        # slot would (no training steps: zero train metrics; unchanged parameters: its last val and lr).
        last = self.history[-1] if self.history else {}  # parked variants exist only after a record
        train_loss = self._widen((mt["loss_sum"] / count).double().cpu().numpy(), 0.0)
        train_acc = self._widen((mt["correct"] / count).double().cpu().numpy(), 0.0)
        val_acc = self._widen(val["acc"], last.get("val_acc", np.nan))
        val_loss = self._widen(val["loss"], last.get("val_loss", np.nan))
        lr = self._widen(optim.get_hparam(self.carry["opt_state"], "lr").double().cpu().numpy(), last.get("lr", np.nan))
        self._early_stop(val_acc, best_before)
        self.carry["metrics"] = tree.tree_map(torch.zeros_like, mt)
        diverged = self.diverged()
        record = {"epoch": self.epoch, "train_loss": np.where(diverged, np.nan, train_loss), "train_acc": train_acc,
                  "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
                  "diverged": diverged, "stopped": self.stopped_epoch >= 0, "epoch_s": train_s}
        self.history.append(record)
        # Steady-state step time: a step that compiled (a process's first, or the first after compact())
        # is reported apart.
        compiled_here = self._epoch_compile_s > 0
        self.epoch += 1
        steps = self.plan.steps_per_epoch - compiled_here
        self.timing["step_s"] = (train_s - self._epoch_compile_s) / max(steps, 1)
        self._epoch_compile_s = 0.0
        return record

    def _widen(self, live_values: np.ndarray, parked) -> np.ndarray:
        """(K,) from the computed variants' values; ``parked`` (a number, or K values) for the others."""
        full = np.array(np.broadcast_to(parked, (len(self.variants),)), dtype=np.float64)
        full[self.live] = live_values
        return full

    def _early_stop(self, val_acc, best_before):
        """A variant with ``early_stopping.patience = P`` that has not raised its best validation
        accuracy by more than ``min_delta`` for P epochs stops: its slot freezes (masked updates, as a
        diverged variant's) and keeps its best epoch."""
        gained = np.asarray(val_acc) > best_before + np.array([v.early_stopping.min_delta for v in self.variants])
        self.since_gain = np.where(gained, 0, self.since_gain + 1)
        patience = np.array([v.early_stopping.patience for v in self.variants])
        # Diverged variants (this epoch or any before: carry["diverged"] is already updated) are frozen
        # for that reason and are not reported as stopped.
        running = (self.stopped_epoch < 0) & ~self.diverged()
        stop = running & (patience > 0) & (self.since_gain >= patience)
        for i in np.flatnonzero(stop):
            self.stopped_epoch[i] = self.slot_epoch(int(i))  # the own epoch just completed, 0-based
            self.freeze(int(i))

    @property
    def all_stopped(self) -> bool:
        """Every variant has stopped early or diverged: further epochs would change nothing."""
        return bool(np.all(self.ended()))

    # --- evaluation ----------------------------------------------------------------------------

    def evaluate(self, split: str, params=None, model_state=None, probs: bool = False) -> dict:
        """Loss, accuracy and confusion matrix per variant on ``split`` ("val" or "test"); with ``probs``
        also every variant's class probabilities, ``probs`` (K, N, 7) float64 numpy, from the same pass
        (they are what evaluate_views' plain view computes)."""
        params = self.carry["params"] if params is None else params
        model_state = self.carry["model_state"] if model_state is None else model_state
        per_variant = split == "val" and self.folds is not None  # cross-validation: each variant's own fold
        if per_variant and probs:
            raise ValueError("evaluate('val', probs=True): a cross-validation population's folds differ in size; "
                             "ask for the test split's probabilities")
        if per_variant:
            (x, y, n), starts, program = self._fold_val, self._fold_starts, self._eval_folds
        else:
            (x, y), (starts, n), program = self.data.split(split), self._eval_index[split], self._eval
        loss, confusion, chunks = 0.0, 0.0, []
        for s in starts:
            first = "eval_compile_s" not in self.timing
            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            t = time.perf_counter()
            if self.mode == "vmap":
                l, c, p = program(params, model_state, x, y, s, n)
            else:
                pick = (lambda t, i: t[i]) if per_variant else (lambda t, i: t)
                outs = [self._eval(tree.index(params, i), tree.index(model_state, i), pick(x, i), pick(y, i), s,
                                   pick(n, i)) for i in range(_leading(params))]
                l, c, p = (torch.stack([o[j] for o in outs]) for j in range(3))
            if first:  # the first call compiles the eval program: report it apart, like the step's
                self._sync()
                self.timing["eval_compile_s"] = time.perf_counter() - t
            loss, confusion = loss + l, confusion + c
            if probs:  # a CUDA graph's outputs are overwritten by its next replay: keep a copy
                chunks.append(p.clone() if self.cuda_graphs else p)
        confusion = confusion.double().cpu().numpy().round().astype(np.int64)
        total = n.cpu().numpy().astype(np.float64) if per_variant else int(y.shape[0])
        acc = np.trace(confusion, axis1=1, axis2=2) / total
        out = {"loss": loss.double().cpu().numpy() / total, "acc": acc, "confusion": confusion}
        if probs:
            out["probs"] = torch.cat(chunks, dim=1)[:, :total].to(torch.float64).cpu().numpy()
        return out

    def evaluate_views(self, split: str, *, params=None, model_state=None, tta=None, members=None) -> dict:
        """Every variant's class probabilities on ``split``, with test-time augmentation and an ensemble.

        ``tta``: None, "flip" (original + mirror) or "flip+shift" (also 2-pixel shifts); views.py.
        ``members``: the ensemble's variants, indices or a boolean mask (default: every variant that has
        not diverged). ``params``/``model_state`` default to the current ones, as in :meth:`evaluate`;
        pass ``self.best[...]`` for the best-epoch networks. Returns numpy values:

            acc (K,), confusion (K, 7, 7)          each variant, no TTA
            tta_acc, tta_confusion                 the same with TTA (None without)
            ensemble, tta_ensemble                 {"members", "acc", "confusion", "per_class"} (None: no
                                                   members, only when every variant diverged)
            probs, tta_probs (K, N, 7)             for other ensembles (views.ensemble) without another pass

        One cached program per (model, dtype, chunk, precision, tta, mode, compile): repeated calls,
        other parameters, other members and splits of equal size never recompile.
        """
        if split == "val" and self.folds is not None:
            raise ValueError("evaluate_views('val'): this cross-validation population validates each variant on its "
                             "own Training fold, which an ensemble cannot share; use 'test'")
        params = self.carry["params"] if params is None else params
        model_state = self.carry["model_state"] if model_state is None else model_state
        k = _leading(params)
        if members is None:  # as the report's means: a diverged variant is left out unless asked for
            members = ~(self.diverged() if k == len(self.variants) else self.carry["diverged"].cpu().numpy())
            members = members if members.any() else None  # all diverged: no ensemble to report
        else:
            members = views.member_indices(members, k)  # a mistake fails here, before any evaluation
        run = views.program(self.model, MEAN, STD, self.dtype, self.eval_chunk_size, self.precision, tta,
                            self.mode, self.compile, self.device.type)
        x, y = self.data.split(split)
        starts, n = self._eval_index[split]
        chunks = []
        for s in starts:
            if self.mode == "vmap":
                chunks.append(run(params, model_state, x, s, n))  # (K, T, chunk, 7)
            else:
                chunks.append(torch.stack([run(tree.index(params, i), tree.index(model_state, i), x, s, n)
                                           for i in range(k)]))
        total = int(y.shape[0])
        probs = torch.cat(chunks, dim=2)[:, :, :total].to(torch.float64).cpu().numpy()  # (K, T, N, 7)
        labels = y.cpu().numpy()

        def summary(p):  # p: (K, N, 7)
            ens = None if members is None else views.ensemble(p, labels, members)
            return views.accuracy(p, labels), views.confusions(p, labels), \
                (None if ens is None else {key: ens[key] for key in ("members", "acc", "confusion", "per_class")})

        acc, confusion, ens = summary(probs[:, 0])
        tta_acc, tta_confusion, tta_ens = summary(probs[:, 1]) if tta is not None else (None, None, None)
        return {"split": split, "tta": tta, "acc": acc, "confusion": confusion, "tta_acc": tta_acc,
                "tta_confusion": tta_confusion, "ensemble": ens, "tta_ensemble": tta_ens, "probs": probs[:, 0],
                "tta_probs": probs[:, 1] if tta is not None else None}

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
        self.slot_start = np.asarray(sd.get("slot_start", [0] * len(self.variants)), dtype=np.int64)
        self.history = [{k: (np.asarray(v) if isinstance(v, list) else v) for k, v in r.items()} for r in sd["history"]]
        # the first step and eval after a resume compile again
        self.timing = {**{k: v for k, v in sd["timing"].items() if k != "eval_compile_s"}, "steps": 0}
        self.carry = _flat_grad_acc(tree.to(sd["carry"], self.device))
        self.best = tree.to(sd["best"], self.device)
        if "early" in sd:
            self.since_gain = np.asarray(sd["early"]["since_gain"], dtype=np.int64)
            self.stopped_epoch = np.asarray(sd["early"]["stopped_epoch"], dtype=np.int64)
        if "hp" in sd:  # slots a search froze or refilled (older checkpoints rebuild hp from the variants)
            self.hp = tree.to(sd["hp"], self.device)
        self.live = np.asarray(sd.get("live", range(len(self.variants))), dtype=np.int64)  # compacted: fewer
        self._parked = {int(i): tree.to(m, self.device) for i, m in sd.get("parked", [])}


def _leading(tree_of_stacked) -> int:
    """K of a stacked tree: the leading dimension of its leaves."""
    return int(tree.leaves(tree_of_stacked)[0].shape[0])


def _flat_grad_acc(carry: dict) -> dict:
    """A checkpoint's carry with the gradient accumulator in the step's flat layout (older
    checkpoints, before 2026-12-02, kept it per tensor): one (K, P) buffer in the params' order."""
    acc = carry.get("grad_acc")
    if acc is None or set(acc) == {FLAT}:
        return carry
    ravel = Ravel(tree.index(carry["params"], 0))  # one variant's layout, as the step flattens it
    return {**carry, "grad_acc": torch.func.vmap(ravel.flat)(acc)}


