"""What mixing update rules in one population costs: optimizer-state size and step time.

    python scripts/mixed_optimizers.py [--model mlp] [--k 4] [--steps 10] [--no-compile]

Builds two populations of K variants of one model on the same data: one whose variants use SGD
(momentum), Adam, RMSprop and AdamW in turn (a ``select`` over four rules), and one where every
variant uses Adam. Reports each one's optimizer-state floats per variant, next to what the four
rules would hold with a state each (the layout before rules shared their buffers), and the median
step time of both, timed interleaved in one process.
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from fer_func import tree
from fer_func.bench.measure import time_interleaved
from fer_func.bench.suite import bench_data
from fer_func.config import ModelConfig, OptimizerConfig, VariantConfig
from fer_func.optim import from_config
from fer_func.population import Population

RULES = (OptimizerConfig("sgd", lr=0.01, momentum=0.9), OptimizerConfig("adam", lr=1e-3),
         OptimizerConfig("rmsprop", lr=1e-3), OptimizerConfig("adamw", lr=1e-3))


def variants(model: str, k: int, mixed: bool) -> list[VariantConfig]:
    base = VariantConfig(model=ModelConfig(model), batch_size=64, epochs=1)
    return [dataclasses.replace(base, seed=i, optimizer=RULES[i % 4] if mixed else RULES[1]) for i in range(k)]


def state_floats(pop: Population) -> int:
    """Optimizer-state elements per variant (the stacked state's size over K)."""
    return tree.num_elements(pop.carry["opt_state"]) // len(pop.variants)


def run(model="mlp", k=4, steps=10, compile=True) -> dict:
    data = bench_data(64, steps + 4)
    pops = {}

    def build(mixed):
        def make():
            pop = pops[mixed] = Population(variants(model, k, mixed), data, compile=compile)
            perm = pop.epoch_order(0)
            return lambda j: pop.step(perm, pop._js[j % pop.plan.steps_per_epoch])
        return make

    times = time_interleaved({"four rules": build(True), "adam only": build(False)}, torch.device("cpu"), steps=steps)
    params = tree.index(pops[True].carry["params"], 0)
    separate = sum(tree.num_elements(from_config(c).init(params)) for c in RULES)
    return {"model": model, "k": k, "compiled": bool(compile), "params_per_variant": tree.num_elements(params),
            "state_floats": {"four rules, shared buffers": state_floats(pops[True]),
                             "four rules, a state each": separate, "adam only": state_floats(pops[False])},
            "step_ms": {n: round(t["step_s"] * 1000, 1) for n, t in times.items()},
            "compile_s": {n: round(t["compile_s"], 1) for n, t in times.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/mixed_optimizers.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mlp")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args(argv)
    print(json.dumps(run(args.model, args.k, args.steps, not args.no_compile), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
