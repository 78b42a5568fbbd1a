"""Progress of a whole run: one bar over every step of every population, with its ETA, and beneath it
(tqdm ``position=1``) the population now training, its epoch, compile time, throughput and best val.

    overall = RunProgress(groups, n_train)               # total = epochs x steps/epoch of every population
    with overall.population(pop, g, len(groups)) as bar: # the population's detail bar, beneath
        bar.step(done)                                   # steps done in this epoch (both bars move)
        bar.epoch_done(record)                           # a line above the bars; the detail's postfix

The total is counted before any population is built (make_plan on the training-set size); a
population corrects it when it starts (cross-validation trains on fewer images) and when it ends
early (every variant stopped), so the ETA is always over the steps still to come. A resumed
population's finished steps are counted as done without counting towards the rate. ``enabled=False``
(Ray workers, tests) draws nothing.
"""
from __future__ import annotations

from contextlib import contextmanager

from tqdm import tqdm

from fer_func.population.plan import make_plan


def _steps(group, n_train: int) -> int:
    try:
        return make_plan(group, n_train).steps_per_epoch * group[0].epochs
    except Exception:  # a plan the population itself will reject with its own message; count it then
        return 0


class RunProgress:
    def __init__(self, groups, n_train: int, *, enabled: bool = True):
        self.enabled = enabled
        self.expected = {g: _steps(group, n_train) for g, group in enumerate(groups)}
        self.bar = tqdm(total=sum(self.expected.values()), desc="run", unit="step", dynamic_ncols=True, position=0,
                        leave=True, disable=not enabled, smoothing=0.05)

    def _skip(self, n: int) -> None:
        """Count ``n`` steps as done (a resumed population's) without a jump in the measured rate."""
        b = self.bar
        if b.disable:  # a disabled tqdm (a Ray worker's, a test's) keeps no print state to move
            return
        b.n += n
        b.last_print_n += n
        b.initial += n
        b.refresh()

    @contextmanager
    def population(self, pop, g: int, n_groups: int):
        plan = pop.plan
        total = plan.epochs * plan.steps_per_epoch
        self.bar.total += total - self.expected.get(g, 0)  # the population's own plan is exact
        self.expected[g] = total
        done = pop.epoch * plan.steps_per_epoch + pop.step_in_epoch
        self._skip(done)
        detail = PopulationBar(self, pop, g, n_groups, total, done)
        try:
            yield detail
        finally:
            left = total - detail.done  # an early stop (or Ctrl-C): what was not trained leaves the total
            if not pop.epoch < plan.epochs or pop.all_stopped:
                self.bar.total -= left
                self.bar.refresh()
            detail.bar.close()

    def close(self) -> None:
        self.bar.close()


class PopulationBar:
    def __init__(self, run: RunProgress, pop, g: int, n_groups: int, total: int, done: int):
        self.run, self.pop, self.g, self.n_groups, self.done = run, pop, g, n_groups, done
        self.bar = tqdm(total=total, initial=done, desc=self._desc(), unit="step", dynamic_ncols=True, position=1,
                        leave=False, disable=not run.enabled)

    def _desc(self) -> str:
        p = self.pop
        return f"pop {self.g + 1}/{self.n_groups} {p.plan.model.name} K={len(p.live)} epoch {p.epoch + 1}/{p.plan.epochs}"

    def step(self, in_epoch: int) -> None:
        """``in_epoch`` steps of the current epoch are done."""
        now = self.pop.epoch * self.pop.plan.steps_per_epoch + in_epoch
        if now > self.done:
            self.run.bar.update(now - self.done)
            self.bar.update(now - self.done)
            self.done = now

    def note(self, text: str) -> None:
        self.bar.set_postfix_str(text)

    def epoch_done(self, record) -> None:
        """The epoch's line above the bars (its throughput and best val), and the next epoch's title."""
        pop, plan = self.pop, self.pop.plan
        best = float(record["val_acc"].max())
        samples = plan.micro_batch * plan.steps_per_epoch * len(pop.live)
        compiled = f"compile {pop.timing['compile_s']:.1f}s, " if pop.compile else ""
        text = f"{compiled}{samples / record['epoch_s']:.0f} variant-samples/s, best val {100 * best:.1f}%"
        self.note(text)
        if self.run.enabled:
            self.bar.write(f"pop {self.g + 1}/{self.n_groups} {plan.model.name} K={len(pop.live)} "
                           f"epoch {int(record['epoch']) + 1}/{plan.epochs}: {text}")

    def next_epoch(self) -> None:
        self.bar.set_description_str(self._desc())
