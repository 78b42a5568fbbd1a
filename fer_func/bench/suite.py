"""The benchmark suite: ``run(models, ks, ...)`` measures and reports; ``main(options)`` is ``runner.py --bench``."""
from __future__ import annotations

import functools
import gc
from pathlib import Path

import torch

from fer_func.bench import impls, report
from fer_func.bench.measure import time_interleaved, time_steps
from fer_func.runtime import machine
from fer_func.study import estimate

DEFAULT_MODELS = ("mlp", "simple_cnn", "regularized_cnn")
DEFAULT_K = (1, 2, 4, 8)
DEFAULT_BATCH = 64
DEFAULT_STEPS = 10


def bench_data(batch: int, steps: int):
    """Synthetic FER with enough training images for the timed steps (wrapping is harmless)."""
    from fer_func.data.synthetic import generate
    n = min(max(batch * (steps + 4), 2 * batch), max(4096, 2 * batch))
    return generate(seed=0, sizes=(n, 8, 8))


def run(models=DEFAULT_MODELS, ks=DEFAULT_K, batch=DEFAULT_BATCH, steps=DEFAULT_STEPS, device="cpu",
        impl_names=impls.IMPLS, bf16=False, channels_last=False, distinct_seeds=False, json_path: Path | None = None,
        warmup: int = 2, interleave: bool = True, echo=print) -> list[dict]:
    device = torch.device(device)
    data = bench_data(batch, steps + warmup + 1)
    meta = machine(device)
    # This machine's float32 matmul rate now, beside the rows: a shared VM's speed moves from run to run, and
    # a ratio is only comparable to another measured at a similar peak (the e2e benchmark reports it too).
    meta["peak_gmacs"] = estimate.peak_gmacs(device)
    echo(f"# {meta['date']}  device {device}{' ' + meta['gpu'] if meta['gpu'] else ''}  threads {meta['threads']} "
         f"(cpus {meta['host_cpus']})  float32 matmul peak {meta['peak_gmacs']:.1f} GMAC/s  torch {meta['torch']}  "
         f"malloc: {meta['malloc']}  batch {batch}  "
         f"{steps} timed steps ({'interleaved' if interleave else 'one implementation after another'})"
         f"{'  bf16 autocast' if bf16 else ''}{'  channels-last' if channels_last else ''}")
    echo(report.header())
    rows = []
    for model in models:
        for k in ks:
            setup = impls.Setup(model=model, k=k, batch=batch, data=data, device=device, channels_last=channels_last,
                                 distinct_seeds=distinct_seeds)
            autocast = torch.bfloat16 if bf16 else None
            if interleave:
                # One reset per (model, K): a reset between builds would drop the compiled code of the
                # implementations built before it. They share no compiled code, so each still pays its own.
                torch._dynamo.reset()
                timings = time_interleaved({i: functools.partial(impls.build, i, setup) for i in impl_names}, device,
                                           steps=steps, warmup=warmup, autocast=autocast)
            for impl in impl_names:
                if interleave:
                    r = timings[impl]
                else:
                    torch._dynamo.reset()  # every measurement pays its own compile: compile_s is comparable
                    r = time_steps(functools.partial(impls.build, impl, setup), device, steps=steps, warmup=warmup,
                                   autocast=autocast)
                    gc.collect()
                r |= {"model": model, "k": k, "batch": batch, "device": str(device), "impl": impl,
                      "variant_samples_per_s": k * batch / r["step_s"], "threads": meta["threads"],
                      "bf16": bf16, "channels_last": channels_last, "dtype": "float32", "interleaved": interleave}
                rows.append(r)
                report.add_speedups(rows)
                echo(report.line(r))
                if json_path is not None:  # after every row: a run cut short by a timeout keeps what it measured
                    report.write_json(rows, Path(json_path), meta | {"saturation": report.saturation(rows)})
    sat = report.saturation(rows)
    if sat:
        echo("saturation (smallest K within 10% of the best population throughput): "
             + ", ".join(f"{m} K={k}" for m, k in sat.items()))
    if json_path is not None:
        report.plot(rows, Path(json_path).with_suffix(".png"))
        echo(f"wrote {json_path} and {Path(json_path).with_suffix('.png')}")
    return rows


def main(options) -> int:
    """Entry point of ``runner.py --bench`` (options: fer_func.study.options.RunOptions)."""
    from fer_func.study.options import resolve_device

    # The CLI has already re-executed itself with tuned malloc (fer_func.runtime) on Linux.
    device = resolve_device(options.device)
    b = options.bench
    names = b.impls or impls.IMPLS
    if not options.compile:
        names = tuple(n for n in names if n not in ("population", "sequential_compiled"))
    run(models=b.models or DEFAULT_MODELS, ks=b.k or DEFAULT_K, batch=b.batch or DEFAULT_BATCH,
        steps=b.steps or DEFAULT_STEPS, device=device, impl_names=names, bf16=b.bf16,
        channels_last=b.channels_last, distinct_seeds=b.distinct_seeds, json_path=b.json,
        interleave=not b.one_at_a_time)
    return 0
