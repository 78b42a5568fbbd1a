"""Population-based training (Jaderberg et al. 2017) on one compiled population.

K members start from random points of the space and train together. Every ``interval`` epochs
(a ready point) the members are ranked by validation accuracy; each member of the bottom
``quantile`` *exploits* a random member of the top quantile -- copies its weights, BatchNorm
statistics, optimizer and schedule state (``Population.copy_slots``: one gather over the K axis on
the device, no host round-trip and no checkpoint file) -- then *explores*: each searched value is
multiplied by a random factor of ``perturb`` (kept in range), or with probability ``resample``
drawn afresh (``Population.set_hparams``; the optimizer rule stays, see there). Nothing recompiles.

The lineage records which slot copied which at which epoch, and every member's values per epoch,
so the winner's hyperparameter schedule can be traced back through its ancestors.
"""
from __future__ import annotations

import numpy as np

from fer_func.study.space import Space


class PBT:
    def __init__(self, space: Space, make_variant, *, k: int, epochs: int, seed: int):
        self.space, self.make_variant, self.k, self.epochs = space, make_variant, k, epochs
        self.interval = int(space.option("interval"))
        self.quantile = float(space.option("quantile"))
        self.resample = float(space.option("resample"))
        self.perturb = [float(f) for f in space.option("perturb")]
        self.rng = np.random.default_rng(seed)
        self.values: list[dict] = []      # each slot's current point of the space
        self.history: list[list[dict]] = []  # per epoch: each slot's values during that epoch
        self.lineage: list[dict] = []     # {"epoch", "slot", "from", "before", "after"} per exploit
        self.epoch = 0

    def start(self, build_population):
        self.values = [{p.key: p.sample(self.rng) for p in self.space.params} for _ in range(self.k)]
        return build_population([self.make_variant(v, slot) for slot, v in enumerate(self.values)])

    @property
    def done(self) -> bool:
        return self.epoch >= self.epochs

    def after_epoch(self, pop, record: dict) -> list[dict]:
        self.history.append([dict(v) for v in self.values])
        self.epoch += 1
        if self.epoch % self.interval or self.done:
            return []
        return self._exploit_explore(pop, np.asarray(record["val_acc"], dtype=float),
                                     np.asarray(record["diverged"], dtype=bool))

    def _exploit_explore(self, pop, acc, diverged) -> list[dict]:
        score = np.where(diverged, -np.inf, acc)
        order = np.argsort(-score, kind="stable")  # best first
        n = max(1, int(round(self.quantile * self.k)))
        top, bottom = order[:n], order[-n:]
        src = list(range(self.k))
        for slot in bottom:
            src[int(slot)] = int(self.rng.choice(top))
        pop.copy_slots(src)
        events = []
        for slot in map(int, bottom):
            before = dict(self.values[src[slot]])
            after = self._explore(before)
            self.values[slot] = after
            pop.set_hparams(slot, self.make_variant(after, slot))
            events.append({"epoch": self.epoch, "slot": slot, "from": src[slot], "before": before, "after": after,
                           "score": float(score[slot]), "from_score": float(score[src[slot]])})
        self.lineage += events
        return events

    def _explore(self, values: dict) -> dict:
        out = {}
        for p in self.space.params:
            if self.rng.random() < self.resample:
                out[p.key] = p.sample(self.rng)
            elif p.kind == "choice":  # a choice has no neighbour to perturb to: it stays
                out[p.key] = values[p.key]
            else:
                out[p.key] = p.perturb(values[p.key], float(self.rng.choice(self.perturb)))
        if "optimizer.name" in out:  # a running member keeps its update rule (Population.set_hparams)
            out["optimizer.name"] = values["optimizer.name"]
        return out

    def ancestry(self, slot: int) -> list[dict]:
        """The values slot ``slot``'s final member trained with at each epoch, through its ancestors:
        walking back, an exploit at epoch e means epochs before e were the donor's."""
        chain, current = [], slot
        copies = {(e["epoch"], e["slot"]): e["from"] for e in self.lineage}
        for epoch in range(len(self.history) - 1, -1, -1):
            chain.append({"epoch": epoch, "slot": current, **self.history[epoch][current]})
            current = copies.get((epoch, current), current)
        return chain[::-1]

    # --- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"values": self.values, "history": self.history, "lineage": self.lineage, "epoch": self.epoch,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, sd: dict):
        self.values, self.history, self.lineage, self.epoch = sd["values"], sd["history"], sd["lineage"], sd["epoch"]
        self.rng.bit_generator.state = sd["rng"]
