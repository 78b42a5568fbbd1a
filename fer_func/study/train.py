"""One population trained from its checkpoint to the end: the unit a local run loops over and a Ray worker runs.

    build the population -> load its checkpoint (replaying the finished epochs) -> epochs of one compiled step,
    each checkpointed in the background -> the best epoch tested -> the outcome run.py's report needs

fer_func/study/run.py loops over these in its own process; fer_func/distributed/ray_run.py runs each as a Ray task.
Both import this module and neither imports the other's code to get it, so the local and the distributed run share
one training loop without a circle. Ctrl-C (:class:`StopFlag`) finishes the current step, checkpoints and raises
:class:`Interrupted`, which carries the resume command.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import torch

from fer_func.population import Population, compaction
from fer_func.runtime import program
from fer_func.study import checkpoint, ensembles
from fer_func.study.options import RunOptions
from fer_func.study.progress import RunProgress


class Interrupted(KeyboardInterrupt):
    """Ctrl-C after a checkpoint was written; the CLI prints how to resume."""

    @classmethod
    def at(cls, run_dir) -> "Interrupted":
        return cls(f"interrupted; checkpoint written. Resume with: {program() or 'fer-func'} --resume {run_dir}")


class StopFlag:
    """SIGINT sets a flag the training loop polls after each step, instead of killing the step."""

    def __init__(self):
        self.set = False

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_):
        if self.set:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)
        return False



def train_population(group, g: int, n_groups: int, data, options: RunOptions, device, run_dir, need, chosen, *,
                     checkpoints=None, stop=lambda: False, on_epoch=lambda record: None,
                     progress_bar: bool = True, progress: RunProgress | None = None) -> dict:
    """Build population ``g`` of ``group``, train it from its checkpoint (if any) to the end, release it.

    The unit a local run loops over and a Ray worker runs (fer_func/distributed): ``on_epoch(record)``
    sees every epoch record, the replayed ones of a resumed population included, and the return value
    is what the run's report needs: the per-variant final records, the population's timing, the
    PrivateTest probabilities for ensembles, and (for a worker) the whole epoch history.
    """
    t0 = time.perf_counter()
    pop = Population(group, data, device=device, compile=options.compile, dtype=getattr(torch, options.dtype),
                     precision=options.precision, cuda_graphs=options.cuda_graphs)
    ckpt = Path(checkpoints or Path(run_dir) / "checkpoints") / f"population-{g}.pt"
    if ckpt.exists():
        pop.load_state_dict(checkpoint.load(ckpt, map_location=device))
        for e in pop.history:  # replay the finished epochs into the report and W&B
            on_epoch(e)
    # The population's wall time, summed over the processes that trained it (kept in its checkpoints).
    before = pop.timing.get("wall_s", 0.0)
    pop.wall_s = lambda: before + time.perf_counter() - t0
    store: dict = {}
    with checkpoint.BackgroundSaver() as saver:  # each epoch's checkpoint is written while the next trains,
        own = progress is None  # no run-wide bar (a Ray worker, a direct call): this population's alone
        progress = RunProgress([], 0, enabled=progress_bar) if own else progress
        try:
            _train(pop, g, n_groups, stop, ckpt, saver, run_dir, on_epoch, progress, options.compact)
        finally:
            if own:
                progress.close()
        finished, probs = pop.finish(with_probs=True)  # and the last one while the best networks are tested
        ensembles.collect(pop, group, need, chosen, store, probs)  # PrivateTest probabilities, while pop is here
    finals = [{**{k: final[k] for k in ("train_acc", "val_acc", "test_acc", "best_epoch", "gap", "per_class",
                                       "confusion", "stopped_epoch")}, "diverged": final["diverged"]}
              for final in finished]
    # Eager (--no-compile): the first step is only a warm-up, so no compile time is recorded or shown.
    compiled = bool(pop.compile)
    timing = {"compile_s": pop.timing["compile_s"] if compiled else None,
              "eval_compile_s": pop.timing.get("eval_compile_s") if compiled else None,
              "step_s": pop.timing["step_s"], "wall_s": pop.wall_s(), "gmacs": achieved_gmacs(pop),
              "computed_k": [int(r["k"]) for r in pop.history]}
    return {"g": g, "finals": finals, "store": store, "timing": timing, "history": list(pop.history)}



def achieved_gmacs(pop) -> float | None:
    """Multiply-adds per second (billions) the population's steps achieved over its whole training:
    3 forward passes' worth per training image (forward, input and weight gradients), every computed
    variant's images (padding included) over the epochs' steady-state step seconds (compiles left out)."""
    images = sum(r["k"] for r in pop.history) * pop.plan.steps_per_epoch * pop.plan.micro_batch
    seconds = sum(r["compute_s"] for r in pop.history)
    return 3 * images * pop.model.macs / seconds / 1e9 if seconds > 0 else None


def _train(pop, g, n_groups, stop, ckpt, saver, run_dir, on_epoch, progress, compact):
    plan = pop.plan
    with progress.population(pop, g, n_groups) as bar:
        while pop.epoch < plan.epochs and not pop.all_stopped:  # every variant stopped early: the population ends
            bar.next_epoch()
            first, start = pop.timing["steps"] == 0, pop.step_in_epoch

            def steps(done):
                if first and done == start + 1 and pop.compile:  # the first step includes torch.compile: show it apart
                    bar.note(f"first step (compile) {pop.timing['compile_s']:.1f}s")
                bar.step(done)

            record = pop.train_epoch(progress=steps, stop=stop)
            if record is None:  # Ctrl-C mid-epoch: this checkpoint is on disk before the run says so
                saver.wait()
                pop.timing["wall_s"] = pop.wall_s()
                checkpoint.save(ckpt, pop.state_dict())
                raise Interrupted.at(run_dir)
            bar.epoch_done(record)
            live = int((~pop.ended()).sum())
            if compact and compaction.worth_it(len(pop.live), live, record["epoch_s"], plan.epochs - pop.epoch,
                                               pop.timing["compile_s"] + (pop.timing.get("eval_compile_s") or 0.0)):
                bar.bar.write(f"pop {g + 1}/{n_groups}: {len(pop.live) - live} variants ended; continuing with the "
                              f"{live} live ones (compiles the step for K={live})")
                pop.compact()
            pop.timing["wall_s"] = pop.wall_s()
            saver.save(ckpt, pop.state_dict())
            on_epoch(record)
            if stop():
                raise Interrupted.at(run_dir)
