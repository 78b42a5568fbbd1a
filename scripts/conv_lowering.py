"""How to compute K variants' convolutions: the lowerings measured for ``fer_func/nn/conv.py``.

    python scripts/conv_lowering.py [--k 8] [--batch 64] [--device cpu]

Times a forward + backward (grads of weights and inputs) of one 3x3 conv layer for K variants,
for simple_cnn's two layer shapes, eager and compiled, medians in one process:

- ``loop``: K separate convs (what ``sequential`` does, and what a custom vmap rule with a per-variant
  loop would run);
- ``vmap``: ``vmap(grad(...))`` over ``F.conv2d``: torch lowers it to one grouped conv (groups = K);
- ``grouped``: the same grouped conv written by hand (weights (K*out, in), input (B, K*in));
- ``vmap_unfold``: im2col (``F.unfold``) + matmul per variant, under vmap;
- ``shared_wide``: one conv with K*out channels on images every variant shares (same-seed variants
  without augmentation only; not general).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from fer_func import prng
import torch.nn.functional as F
from torch.func import grad, vmap


def conv(w, x):  # x (B, in, H, W), w (out, in, 3, 3)
    return F.conv2d(x, w, padding=1)


def unfold_conv(w, x):
    b, c, h, wd = x.shape
    cols = F.unfold(x, 3, padding=1)                       # (B, in*9, H*W)
    return (w.reshape(w.shape[0], -1) @ cols).reshape(b, w.shape[0], h, wd)


def median_s(f, n: int = 7) -> float:
    f(), f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def candidates(k: int, b: int, c_in: int, c_out: int, side: int, device) -> dict:
    kx, kw = prng.split(prng.key(0))
    x = prng.normal(kx, (k, b, c_in, side, side)).to(device)
    w = (0.1 * prng.normal(kw, (k, c_out, c_in, 3, 3))).to(device)
    loss = lambda op: (lambda w, x: op(w, x).relu().square().mean())
    vg = lambda op, x_dim=0: vmap(grad(loss(op), argnums=(0, 1)), in_dims=(0, x_dim))

    def loop():
        for i in range(k):
            wi, xi = w[i].clone().requires_grad_(), x[i].clone().requires_grad_()
            loss(conv)(wi, xi).backward()

    def grouped_loss(w, x):  # (K*out, in, 3, 3) and (B, K*in, H, W)
        y = F.conv2d(x.transpose(0, 1).reshape(b, k * c_in, side, side), w.reshape(k * c_out, c_in, 3, 3),
                     padding=1, groups=k)
        return y.relu().square().reshape(b, k, -1).mean(dim=(0, 2)).sum()

    def wide_loss(w, x):  # x: (B, 1, H, W) shared by every variant
        y = F.conv2d(x, w.reshape(k * c_out, c_in, 3, 3), padding=1)
        return y.relu().square().reshape(b, k, -1).mean(dim=(0, 2)).sum()

    out = {"loop": loop, "vmap": lambda: vg(conv)(w, x), "grouped": lambda: grad(grouped_loss, (0, 1))(w, x),
           "vmap_unfold": lambda: vg(unfold_conv)(w, x)}
    compiled = {"vmap": torch.compile(vg(conv), fullgraph=True), "vmap_unfold": torch.compile(vg(unfold_conv), fullgraph=True),
                "grouped": torch.compile(grad(grouped_loss, (0, 1)), fullgraph=True)}
    for name, f in compiled.items():
        out[f"compiled_{name}"] = (lambda f: lambda: f(w, x))(f)
    if c_in == 1:
        wide = torch.compile(grad(wide_loss, (0, 1)), fullgraph=True)
        out["compiled_shared_wide"] = lambda: wide(w, x[0])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    print(f"# K={a.k} batch={a.batch} device={a.device} threads={torch.get_num_threads()} torch {torch.__version__}")
    for c_in, c_out, side in [(1, 32, 48), (32, 64, 24)]:
        times = {name: median_s(f) for name, f in candidates(a.k, a.batch, c_in, c_out, side, a.device).items()}
        base = times["compiled_vmap"]
        print(f"{c_in:>3} -> {c_out:<3} @{side}: " + ", ".join(f"{n} {t:.4f}s ({base / t:.2f}x)" for n, t in times.items()))


if __name__ == "__main__":
    main()
