"""The least a family's training step can compile in on this machine: the model's forward and backward alone.

    python scripts/compile_floor.py [--profile cpu] [--json PATH]

For every model of ``--all`` under the profile, two cold compiles (each in a child process over an
empty inductor cache), of nothing but one forward and backward of the cross-entropy at batch 64:

- ``torch.nn``: the family's reference ``torch.nn`` module under ``torch.compile``, as any PyTorch
  user would compile it (first forward + first backward: AOTAutograd compiles both);
- ``functional``: ``grad_and_value`` of the functional model (one variant, no ``vmap``, no dropout
  or augmentation, no optimizer, no metrics), ``torch.compile(fullgraph=True)``.

Each child first compiles a trivial program, so the one-off set-up of a process's first compile
(imports, inductor's start) is reported apart: ``--all`` pays it once, not per population.

A population step is that plus ``vmap``, dropout, augmentation, the optimizer and the bookkeeping,
so where the floor alone is above a bound, no population step of that family can meet it with
inductor as it is (``scripts/compile_times.py`` measures the steps themselves).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cold import all_variants, child_in_empty_cache, cpu_seconds, start_inductor


def child(profile: str, name: str, kind: str) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.func import grad_and_value

    from fer_func import prng
    from fer_func.models import build_from

    model = build_from(next(v.model for v in all_variants(profile) if v.model.name == name))
    x = prng.uniform(prng.key(0), (64, 1, 48, 48))
    y = torch.arange(64) % 7
    if kind == "torch.nn":
        module = model.reference().train()
        compiled = torch.compile(module)

        def once():
            module.zero_grad(set_to_none=True)
            F.cross_entropy(compiled(x), y).backward()
    else:
        params, state = model.init(prng.key(0))

        def loss(p):
            logits, _ = model.apply(p, state, x, train=True, dropout={k: 0.0 for k in model.dropout_knobs})
            return F.cross_entropy(logits, y)

        compiled = torch.compile(grad_and_value(loss), fullgraph=True, dynamic=False)

        def once():
            compiled(params)
    # A process's first compile also pays one-off set-up (imports, inductor's start, its first g++ run):
    # paid here by a trivial program and reported apart, since --all pays it once, not per population.
    t0 = time.perf_counter()
    start_inductor()
    setup = time.perf_counter() - t0
    c0, t0 = cpu_seconds(), time.perf_counter()
    once()
    first = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    t0 = time.perf_counter()
    once()
    return {"model": name, "kind": kind, "setup_s": round(setup, 1), "compile_s": round(first, 1),
            "compile_cpu_s": round(cpu, 1),
            "second_call_s": round(time.perf_counter() - t0, 3), "params": model.param_count}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/compile_floor.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--models", nargs="+", help="model families (default: every model of --all)")
    p.add_argument("--json", type=Path)
    p.add_argument("--child", nargs=2, metavar=("MODEL", "KIND"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.profile, *args.child)))
        return 0
    names = args.models or list(dict.fromkeys(v.model.name for v in all_variants(args.profile)))
    rows = []
    print(f"profile {args.profile}, {time.strftime('%Y-%m-%d %H:%M')}: cold compile of one forward + backward "
          f"(batch 64), seconds wall (CPU incl. g++), after the process's one-off compile set-up (reported apart)")
    print("| model | torch.nn module | functional grad | process set-up (paid once) |\n|---|---|---|---|")
    for name in names:
        cells = []
        for kind in ("torch.nn", "functional"):
            rows.append(child_in_empty_cache(__file__, "--profile", args.profile, "--child",
                                             name, kind))
            cells.append(f"{rows[-1]['compile_s']} ({rows[-1]['compile_cpu_s']})")
        print(f"| {name} | {cells[0]} | {cells[1]} | {rows[-1]['setup_s']} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"profile": args.profile, "date": time.strftime("%Y-%m-%d %H:%M"),
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
