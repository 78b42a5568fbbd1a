"""End-to-end benchmark: one study trained as the population and as a plain torch loop, in one process.

    python runner.py --bench --e2e lr [--train-limit N] [--epochs E] [--profile P] [--seeds S] [--json PATH]

1. the population: ``fer_func.study.run.run`` itself, the code ``--study``/``--experiment`` runs
   (compile, every epoch, evaluation each epoch, test at the end, report), with W&B disabled and its
   run directory in a temporary folder that is deleted afterwards;
2. the loop: :mod:`fer_func.bench.torch_loop`, the same variants one after another with torch.nn,
   torch.optim and lr_scheduler, on the same data, from the same initial weights.

Both report wall time, compile time, time per epoch, best validation accuracy per variant and the
multiply-add rate of their training steps next to this machine's float32 matmul peak, measured
here first. ``speedup`` is the loop's wall time over the population's. How to read it: docs/bench.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fer_func import data as fer_data
from fer_func.bench import torch_loop
from fer_func.runtime import machine
from fer_func.models import build_from
from fer_func.population.plan import make_plan
from fer_func.study import estimate
from fer_func.study.experiments import variant_id
from fer_func.study.options import e2e_study, resolve_device

TRAIN_MACS_PER_FORWARD = 3  # forward, input gradients, weight gradients (fer_func/study/estimate.py)


def _population(options) -> tuple[float, dict, list]:
    """Wall time, results.json and the resolved variants of the study run, its directory already deleted."""
    from fer_func.study import resolved
    from fer_func.study import run as study_run
    with tempfile.TemporaryDirectory(prefix="fer_func-e2e-") as tmp:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the run's summary: the bench prints its own table
            run_dir = study_run.run(dataclasses.replace(e2e_study(options), out=Path(tmp)))
        wall = time.perf_counter() - t0
        results = json.loads((run_dir / "results.json").read_text())
        return wall, results, resolved.load(run_dir)


def _population_row(wall: float, results: dict, variants: list, n_train: int, peak: float) -> dict:
    by_id = {variant_id(v): v for v in variants}
    pops, macs_done, step_time, per_epoch = [], 0.0, 0.0, 0.0
    for g, p in enumerate(results["populations"]):
        entries = [e for e in results["variants"] if e["population"] == g]
        plan = make_plan([by_id[e["id"]] for e in entries], n_train)
        steps = plan.steps_per_epoch * plan.epochs
        # Steady-state step time over every epoch's training time, the first (compiling) step left out
        # (Population.timing["step_s"] is the last epoch's alone).
        # Eager (--no-compile) records no compile: every step is a training step.
        compiled = p["compile_s"] is not None
        timed = steps - 1 if compiled else steps
        trained_s = sum(r["epoch_s"] for r in entries[0]["epochs"]) - (p["compile_s"] if compiled else 0.0)
        step_s = trained_s / timed if timed > 0 and trained_s > 0 else math.nan
        step_macs = TRAIN_MACS_PER_FORWARD * plan.model.macs * len(entries) * plan.micro_batch
        if math.isfinite(step_s):
            macs_done, step_time = macs_done + step_macs * timed, step_time + trained_s
        compile_s = (p["compile_s"] or 0.0) + (p["eval_compile_s"] or 0.0)
        per_epoch += (p["wall_s"] - compile_s) / plan.epochs
        pops.append({"model": p["model"], "k": len(entries), "micro_batch": plan.micro_batch, "compile_s": compile_s,
                     "step_s": step_s, "step_gmacs": step_macs / step_s / 1e9, "wall_s": p["wall_s"]})
    finals = {e["id"]: e["final"] for e in results["variants"]}
    gmacs = macs_done / step_time / 1e9 if step_time > 0 else math.nan  # nan: one step only, all of it compiling
    return _row("population", wall, sum(p["wall_s"] for p in pops), sum(p["compile_s"] for p in pops), per_epoch,
                gmacs, peak, {i: f["val_acc"] for i, f in finals.items()},
                {i: f["test_acc"] for i, f in finals.items()}) | {"populations": pops}


def _loop(variants: list, source: str, train_limit, device, dtype, peak: float) -> tuple[dict, object]:
    t0 = time.perf_counter()
    data = fer_data.load(source).limit_train(train_limit).to(device)
    out = {variant_id(v): torch_loop.train_variant(v, data, device, dtype) for v in variants}
    init_s = sum(r["init_s"] for r in out.values())  # making the population's initial weights: not the loop's cost
    wall = time.perf_counter() - t0 - init_s
    macs = sum(TRAIN_MACS_PER_FORWARD * build_from(v.model).macs * r["samples_per_step"] * r["steps"]
               for v, r in zip(variants, out.values()))
    row = _row("loop", wall, sum(r["wall_s"] for r in out.values()), 0.0,
               sum(r["wall_s"] / r["epochs"] for r in out.values()),
               macs / sum(r["train_s"] for r in out.values()) / 1e9, peak,
               {i: r["best_val"] for i, r in out.items()}, {i: r["test_acc"] for i, r in out.items()})
    return row | {"init_s": init_s}, data


def _row(impl, wall, train_s, compile_s, epoch_s, gmacs, peak, best_val, test_acc) -> dict:
    return {"impl": impl, "wall_s": wall, "train_s": train_s, "compile_s": compile_s, "epoch_s": epoch_s,
            "step_gmacs": gmacs, "peak_gmacs": peak, "efficiency": gmacs / peak, "best_val": best_val,
            "test_acc": test_acc}


def seed_noise(results: dict, n_val: int) -> tuple[float, str]:
    """The noise a best-val accuracy carries: the across-seed std of a configuration when there are
    seeds to measure it (root mean square over configurations), else the binomial standard error."""
    configs: dict = {}
    for e in results["variants"]:
        configs.setdefault((e["experiment"], json.dumps(e["hparams"], sort_keys=True)), []).append(e["final"]["val_acc"])
    stds = [np.std(accs, ddof=1) for accs in configs.values() if len(accs) > 1]
    if stds:
        return float(np.sqrt(np.mean(np.square(stds)))), f"population's across-seed std ({len(stds)} configurations)"
    p = float(np.mean([e["final"]["val_acc"] for e in results["variants"]]))
    return math.sqrt(p * (1 - p) / n_val), f"binomial standard error sqrt(p(1-p)/n_val), p={p:.3f}, n_val={n_val}"


def run(options, echo=print) -> dict:
    """Measure, print the table, write ``--json``; returns the JSON document."""
    device, dtype = resolve_device(options.device), getattr(torch, options.dtype)
    peak = estimate.peak_gmacs(device)  # before either side runs, on an idle machine
    wall, results, variants = _population(options)
    loop, data = _loop(variants, options.data, results["train_limit"], device, dtype, peak)
    n_train, n_val = int(data.labels["train"].shape[0]), int(data.labels["val"].shape[0])
    population = _population_row(wall, results, variants, n_train, peak)
    noise, noise_kind = seed_noise(results, n_val)
    ids = list(population["best_val"])
    diff = float(np.mean([abs(population["best_val"][i] - loop["best_val"][i]) for i in ids]))
    meta = {"e2e": options.bench.e2e, "profile": results["profile"], "train_images": n_train, "val_images": n_val,
            "variants": len(ids), "populations": len(results["populations"]), "epochs": max(v.epochs for v in variants),
            "seeds": options.seeds, "dtype": options.dtype, "compile": options.compile, "device": str(device)}
    doc = {"meta": machine(device) | meta,
           "rows": [population, loop], "speedup": loop["wall_s"] / population["wall_s"],
           "train_speedup": loop["train_s"] / population["train_s"], "peak_gmacs": peak,
           "accuracy": {"mean_abs_diff": diff, "noise": noise, "noise_kind": noise_kind,
                        "within_noise": diff <= 2 * noise}}
    echo(table(doc))
    if options.bench.json is not None:
        Path(options.bench.json).parent.mkdir(parents=True, exist_ok=True)
        Path(options.bench.json).write_text(json.dumps(doc, indent=1))
        echo(f"wrote {options.bench.json}")
    return doc


def table(doc: dict) -> str:
    m, (pop, loop), acc = doc["meta"], doc["rows"], doc["accuracy"]
    out = [f"# {m['date']}  e2e {m['e2e']}: {_plural(m['variants'], 'variant')} in "
           f"{_plural(m['populations'], 'population')}, profile {m['profile']}, {m['train_images']} train images, "
           f"{_plural(m['epochs'], 'epoch')}, {m['dtype']}, device {m['device']}, threads {m['threads']}, "
           f"compile {m['compile']}",
           f"{'impl':<11}{'wall_s':>9}{'train_s':>9}{'compile_s':>10}{'epoch_s':>9}{'GMAC/s':>9}{'of peak':>9}"]
    for r in (pop, loop):
        out.append(f"{r['impl']:<11}{r['wall_s']:>9.1f}{r['train_s']:>9.1f}{r['compile_s']:>10.1f}"
                   f"{r['epoch_s']:>9.2f}{r['step_gmacs']:>9.2f}{100 * r['efficiency']:>8.1f}%")
    out += [f"speedup (loop wall / population wall): {doc['speedup']:.2f}x  (training only: "
            f"{doc['train_speedup']:.2f}x)  float32 matmul peak {doc['peak_gmacs']:.1f} GMAC/s", "",
            f"{'variant':<48}{'population':>11}{'loop':>8}{'diff':>8}   best val accuracy, %"]
    for i, a in pop["best_val"].items():
        b = loop["best_val"][i]
        out.append(f"{i:<48}{100 * a:>11.2f}{100 * b:>8.2f}{100 * (a - b):>+8.2f}")
    verdict = "within" if acc["within_noise"] else "NOT within"
    out.append(f"accuracy: mean |population - loop| = {100 * acc['mean_abs_diff']:.2f} pp; noise = "
               f"{100 * acc['noise']:.2f} pp ({acc['noise_kind']}); {verdict} 2x noise")
    return "\n".join(out)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def main(options) -> int:
    """``runner.py --bench --e2e NAME`` (options: fer_func.study.options.RunOptions)."""
    run(options)
    return 0
