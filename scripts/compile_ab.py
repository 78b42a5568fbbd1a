"""A/B of one population step's cold compile between two source trees, alternating, on this machine.

    python scripts/compile_ab.py --trees OLD_CHECKOUT NEW_CHECKOUT [--model regularized_cnn] [--index 0] [--repeat 2]

Compile time drifts between runs on a shared machine, so a before/after comparison made hours
apart (``compile_times`` run twice) can hide or invent a change of the size being measured. Here
each round compiles the same population under each tree, back to back, each in a child process
with ``PYTHONPATH`` set to that tree and an empty inductor cache of its own. Before the timed first
step, the child pays the process's one-off costs (a trivial program, the once-per-process cipher
compile), so the figure is the step's own graph. ``--index`` picks among the profile's populations
of that model (``--all --seeds 1``), in ``--all``'s order: for the cpu profile's regularized_cnn,
0 is the K=19 population and 1 the batch-size one.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def child(profile: str, model: str, index: int) -> dict:
    import torch

    from fer_func import data as fer_data
    from fer_func import prng
    # The harness's helpers come from this file's own folder (the measuring tree; this file runs as a
    # script, so that folder is first on sys.path), everything measured from the tree on PYTHONPATH,
    # which may predate these helpers.
    from cold import all_variants, cpu_seconds, start_inductor
    from fer_func.population import Population
    from fer_func.study import experiments
    from fer_func.study.options import DEFAULT_EXPERIMENTS

    group = [g for g in experiments.populations(all_variants(profile)) if g[0].model.name == model][index]
    prof = experiments.profile_of(DEFAULT_EXPERIMENTS, profile)
    pop = Population(group, fer_data.load("synthetic").limit_train(prof.train_limit), device="cpu",
                     dtype=torch.float32)
    start_inductor()
    prng.blocks_op(torch.zeros(4, 2, dtype=torch.int64), 5)  # the cipher program: once per process, not this step's
    order = pop.epoch_order(0)
    c0, t0 = cpu_seconds(), time.perf_counter()
    pop.step(order, pop._js[0])
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    from torch._dynamo.utils import compile_times
    names, values = compile_times(repr="csv")
    longest = {n: max(float(x) for x in v.split(", ")) for n, v in zip(names, values)}
    return {"model": model, "k": len(group), "compile_s": round(wall, 1), "compile_cpu_s": round(cpu, 1),
            "gxx_wait_s": round(longest.get("async_compile.wait", 0.0), 1),
            "source": str(Path(sys.modules["fer_func"].__file__).parents[1])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/compile_ab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", nargs=2, type=Path, metavar=("A", "B"), help="two checkouts of the project")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--model", default="regularized_cnn")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.profile, args.model, args.index)))
        return 0
    # imported here, not at the top: the child runs this file under the tree being measured, which may predate it
    from cold import run_in_empty_cache

    if not args.trees:
        p.error("--trees A B is required: two checkouts of the project to compare")
    for tree in args.trees:
        if not (tree / "fer_func" / "__init__.py").is_file():
            p.error(f"--trees: {tree} is not a checkout of the project (no fer_func/__init__.py); "
                    f"make one with `git worktree add {tree} REV`")
    rows = []
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: cold compile of {args.model}[{args.index}]'s step ({args.profile} "
          f"profile), trees alternating; seconds wall (CPU incl. g++), final wait for g++")
    for round_ in range(args.repeat):
        for label, tree in zip("AB", args.trees):
            # this file run as a script, so the tree under test need not have it; its fer_func comes from PYTHONPATH
            result = run_in_empty_cache(
                [sys.executable, __file__, "--child", "--profile", args.profile, "--model", args.model,
                 "--index", str(args.index)],
                env={"PYTHONPATH": os.pathsep.join([str(tree.resolve()), os.environ.get("PYTHONPATH", "")])}, cwd=tree)
            row = {"tree": label, "round": round_ + 1, **result}
            rows.append(row)
            print(f"round {row['round']} {label} ({row['source']}, K={row['k']}): {row['compile_s']} s "
                  f"({row['compile_cpu_s']} CPU), g++ wait {row['gxx_wait_s']} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "trees": [str(t) for t in args.trees],
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
