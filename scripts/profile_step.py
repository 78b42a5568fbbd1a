"""Where a study population's step spends its time: the compiled step under torch.profiler.

    python scripts/profile_step.py --experiments lr --seeds 1 [--profile cpu] [--steps 10] [--eager]

Builds the population ``--all`` would build for the named experiments (synthetic data, whole
Training split), compiles it, times ``--steps`` steps, then profiles a few more and prints the
operators by self CPU time, and the achieved multiply-add rate against this machine's matmul peak.
"""
from __future__ import annotations

import argparse
import time

import torch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiments", nargs="+", required=True)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eager", action="store_true")
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args(argv)

    from fer_func import data as fer_data
    from fer_func.models import build_from
    from fer_func.population import Population
    from fer_func.study import experiments
    from fer_func.study.estimate import peak_gmacs
    from fer_func.study.options import DEFAULT_EXPERIMENTS

    exps = experiments.load(DEFAULT_EXPERIMENTS, args.profile)
    variants = [v for v in experiments.select(exps, all=True) if v.experiment in args.experiments]
    variants = [v.replace(seed=v.seed + s) for s in range(args.seeds) for v in variants]
    data = fer_data.load("synthetic")
    pop = Population(variants, data, compile=not args.eager)
    perm = pop.epoch_order(0)
    t = time.perf_counter()
    pop.step(perm, pop._js[0])
    print(f"K={len(variants)} {variants[0].model.name}: first step (compile) {time.perf_counter() - t:.1f} s")
    for j in range(1, 3):
        pop.step(perm, pop._js[j])
    times = []
    for j in range(3, 3 + args.steps):
        t = time.perf_counter()
        pop.step(perm, pop._js[j])
        times.append(time.perf_counter() - t)
    step_s = sorted(times)[len(times) // 2]
    macs = 3 * pop.plan.micro_batch * len(variants) * build_from(variants[0].model).macs
    peak = peak_gmacs("cpu")
    print(f"median step {step_s * 1e3:.0f} ms, {macs / step_s / 1e9:.1f} GMAC/s, matmul peak {peak:.1f} GMAC/s "
          f"({100 * macs / step_s / 1e9 / peak:.0f}% of peak)")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for j in range(3 + args.steps, 6 + args.steps):
            pop.step(perm, pop._js[j])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
