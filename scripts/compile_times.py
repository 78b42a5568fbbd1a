"""Compile time of every population ``--all`` builds, cold and warm, on this machine.

    python scripts/compile_times.py [--profile cpu] [--json PATH]

Runs two child processes over one fresh inductor cache directory: the first compiles every
population's training step and evaluation with nothing cached (a user's first run), the second
finds them cached (any later run). Each child builds the populations of ``--all --seeds 1`` under
the profile one after another, in one process as ``--all`` does, and times the first step and the
first evaluation of each, which is where compilation happens. What a process compiles once (inductor's
start, the shared random-number cipher) is timed first, in rows of its own. The data is the synthetic set at the
profile's training-subset size (compile time does not depend on the pixel values).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(profile: str) -> list[dict]:
    """One row per population: model, K, step and eval compile seconds (this process's caches)."""
    import torch

    from fer_func import data as fer_data
    from fer_func.population import Population
    from cold import all_variants, start_inductor
    from fer_func.study import experiments
    from fer_func.study.options import DEFAULT_EXPERIMENTS

    prof = experiments.profile_of(DEFAULT_EXPERIMENTS, profile)
    variants = all_variants(profile)
    data = fer_data.load("synthetic").limit_train(prof.train_limit)
    rows = []
    # What a process compiles once, whichever population comes first: inductor's start (imports, the
    # first g++ run, the precompiled header) and the random-number cipher every step's dropout and
    # augmentation share (prng.blocks_op; on CPU a native kernel since 2026-12-03, built once per
    # machine in well under a second, so its row is ~0 there). Timed apart, so each population's row
    # is its own graph.
    from fer_func import prng
    for name, once in (("process set-up (trivial program)", start_inductor),
                       ("cipher program (prng, dynamic shapes)",
                        lambda: prng.blocks_op(torch.zeros(4, 2, dtype=torch.int64), 5))):
        t = time.perf_counter()
        once()
        rows.append({"model": name, "k": "", "experiments": ["once per process"],
                     "step_compile_s": round(time.perf_counter() - t, 1), "eval_compile_s": ""})
        print(json.dumps(rows[-1]), flush=True)
    for group in experiments.populations(variants):
        pop = Population(group, data, device="cpu", dtype=torch.float32)
        t = time.perf_counter()
        pop.step(pop.epoch_order(0), pop._js[0])
        step_s = time.perf_counter() - t
        pop.evaluate("val")
        rows.append({"model": group[0].model.name, "k": len(group), "experiments": sorted({v.experiment for v in group}),
                     "step_compile_s": round(step_s, 1), "eval_compile_s": round(pop.timing["eval_compile_s"], 1)})
        print(json.dumps(rows[-1]), flush=True)
        del pop
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/compile_times.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--json", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        measure(args.profile)
        return 0
    result = {"profile": args.profile, "date": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory(prefix="fer-func-inductor-") as cache:
        # TMPDIR too: inductor keeps its precompiled headers under the temporary directory, not its cache.
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TMPDIR": cache}
        for run in ("cold", "warm"):
            t = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--child", "--profile",
                                  args.profile], env=env, capture_output=True, text=True, check=True).stdout
            result[run] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            result[f"{run}_process_s"] = round(time.perf_counter() - t, 1)
    print(f"profile {args.profile}, {result['date']}: seconds to compile (cold = empty inductor cache, warm = cached)")
    print("| population | K | step cold | eval cold | step warm | eval warm |\n|---|---|---|---|---|---|")
    for c, w in zip(result["cold"], result["warm"]):
        print(f"| {c['model']} ({', '.join(c['experiments'])}) | {c['k']} | {c['step_compile_s']} | "
              f"{c['eval_compile_s']} | {w['step_compile_s']} | {w['eval_compile_s']} |")
    print(f"whole process: cold {result['cold_process_s']} s, warm {result['warm_process_s']} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
