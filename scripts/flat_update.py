"""A/B: the optimizer part of a population step compiled per parameter tensor and on one flat buffer.

    python scripts/flat_update.py [--model regularized_cnn] [--k 19] [--rules sgd,adam,rmsprop,adamw]

The part measured is what ``population/step.py`` compiles after the gradients: the (mixed-rule)
update, the finiteness check and the commit ``where``, ``vmap``ped over K variants of the cpu
profile's model. Each layout compiles in a child process over an empty inductor cache (a cold
compile, as a user's first run), and reports compile wall and CPU seconds (gcc children included)
and the median run time. Both layouts must give the same numbers: the child checks flat against
per-tensor, eagerly, before timing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from cold import all_variants, child_in_empty_cache, cpu_seconds


def child(model: str, k: int, rules: list[str], layout: str, runs: int = 30) -> dict:
    import torch

    from fer_func import models, optim, prng, tree
    from fer_func.config import OptimizerConfig
    from fer_func.optim.flat import Ravel
    from fer_func.population.step import all_finite

    p0, _ = models.build_from(next(v.model for v in all_variants("cpu") if v.model.name == model)).init(prng.key(0))
    opts = optim.from_configs([OptimizerConfig(rules[i % len(rules)], lr=1e-3) for i in range(k)])
    params = tree.stack([tree.tree_map(lambda x, i=i: x + 0.01 * i, p0) for i in range(k)])
    state = tree.stack([o.init(p0) for o in opts])
    grads = tree.tree_map(lambda x: torch.sin(x) * 1e-2, params)

    def part(params, state, grads, ok, flat: bool):
        ravel = Ravel(params)
        p, s, g = (ravel.flat(params), ravel.flat(state), ravel.flat(grads)) if flat else (params, state, grads)
        u, new_s = opts[0].update(g, s, p)
        commit = ok & all_finite(g)
        p2, s2 = tree.where(commit, optim.apply_updates(p, u), p), tree.where(commit, new_s, s)
        return (ravel.unflat(p2, params), ravel.unflat(s2, state)) if flat else (p2, s2)

    ok = torch.ones(k, dtype=torch.bool)
    a = torch.func.vmap(lambda *xs: part(*xs, flat=False))(params, state, grads, ok)
    b = torch.func.vmap(lambda *xs: part(*xs, flat=True))(params, state, grads, ok)
    if not all(torch.equal(x, y) for x, y in zip(tree.leaves(a), tree.leaves(b))):
        raise AssertionError("flat and per-tensor updates differ")
    fn = torch.compile(torch.func.vmap(lambda *xs: part(*xs, flat=layout == "flat")), fullgraph=True, dynamic=False)
    c0, t = cpu_seconds(), time.perf_counter()
    fn(params, state, grads, ok)
    wall, cpu = time.perf_counter() - t, cpu_seconds() - c0
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(params, state, grads, ok)
        times.append(time.perf_counter() - t)
    return {"layout": layout, "model": model, "k": k, "rules": rules, "compile_s": round(wall, 1),
            "compile_cpu_s": round(cpu, 1), "run_ms": round(sorted(times)[runs // 2] * 1e3, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/flat_update.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="regularized_cnn")
    p.add_argument("--k", type=int, default=19)
    p.add_argument("--rules", default="sgd,adam,rmsprop,adamw")
    p.add_argument("--child", choices=("tree", "flat"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    rules = args.rules.split(",")
    if args.child:
        print(json.dumps(child(args.model, args.k, rules, args.child)))
        return 0
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: {args.model}, K={args.k}, rules {args.rules}; cold compile of the "
          f"optimizer part (update, finiteness check, commit)")
    print("| layout | compile wall s | compile CPU s | run ms |\n|---|---|---|---|")
    for layout in ("tree", "flat"):
        r = child_in_empty_cache(__file__, "--child", layout, "--model", args.model, "--k",
                                 str(args.k), "--rules", args.rules)
        print(f"| {'per tensor' if layout == 'tree' else 'flat'} | {r['compile_s']} | {r['compile_cpu_s']} | {r['run_ms']} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
