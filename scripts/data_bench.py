"""Timings for docs/data.md: synthetic generation, FER2013 loading (first and cached), augmentation.

    python scripts/data_bench.py [--real PATH] [--batch 256]

Wall-clock seconds, plus this process's CPU seconds where a shared machine makes wall time noisy.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fer_func import prng
from fer_func.config import AugmentConfig
from fer_func.data import augment, generate, load_csv


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", default="/work/shared/data/fer2013/fer2013.csv.gz")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")

    data, w, c = timed(lambda: generate(0))
    print(f"synthetic generate(seed=0), 35,887 images: {w:.1f} s wall, {c:.1f} s CPU")

    if Path(args.real).is_file():
        with tempfile.TemporaryDirectory() as tmp:
            _, w, c = timed(lambda: load_csv(args.real, cache_dir=tmp))
            print(f"FER2013 {args.real}: first load {w:.1f} s wall ({c:.1f} s CPU)")
            _, w, c = timed(lambda: load_csv(args.real, cache_dir=tmp))
            print(f"FER2013 {args.real}: cached load {w:.2f} s wall ({c:.2f} s CPU)")

    cfg = AugmentConfig(enabled=True)
    x = data.images["train"][: args.batch].to(args.device).float()[:, None] / 255
    key = prng.key(0).to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for name, fn in (("eager", lambda k, xb: augment(k, xb, cfg)),
                     ("compiled", torch.compile(lambda k, xb: augment(k, xb, cfg), fullgraph=True))):
        fn(key, x)
        sync()
        reps = 20
        t = time.perf_counter()
        for i in range(reps):
            fn(prng.fold_in(key, i), x)
        sync()
        dt = (time.perf_counter() - t) / reps
        print(f"augment {name}, batch {args.batch}: {dt * 1e3:.1f} ms/batch = {args.batch / dt:,.0f} images/s")


if __name__ == "__main__":
    main()
