"""Calibration check for a dataset: plain ``torch.nn`` MLP vs simple CNN, Adam 1e-3, a few epochs.

    python scripts/data_calibrate.py --data synthetic --train 4000 --eval 2000 --epochs 3

The synthetic set is tuned so that a small CNN clearly beats an MLP, neither gets near 100%, and
classes differ in difficulty; this prints the numbers (overall and per-class accuracy) behind that
claim. The models match our ``mlp`` and ``simple_cnn`` families. Initialisation (PyTorch's default
U(-1/sqrt(fan_in), +1/sqrt(fan_in)) for every weight and bias) and shuffling use ``fer_func.prng``
keys, so the run is reproducible without touching the global RNG.
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from fer_func import prng
from fer_func.data import generate, load


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(2304, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                         nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 7))


def simple_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * 12 * 12, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 7))


@torch.no_grad()
def init_(model: nn.Module, key) -> nn.Module:
    for i, p in enumerate(model.parameters()):
        fan_in = p.shape[1] * math.prod(p.shape[2:]) if p.dim() > 1 else prev_fan_in
        prev_fan_in = fan_in
        bound = 1 / math.sqrt(fan_in)
        p.copy_(prng.uniform(prng.fold_in(key, i), p.shape, low=-bound, high=bound))
    return model


def train_eval(model, x, y, xe, ye, *, epochs, key, batch=64, lr=1e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(epochs):
        model.train()
        perm = prng.permutation(prng.fold_in(key, epoch), len(y))
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xe[i:i + 512]).argmax(1) for i in range(0, len(ye), 512)])
    per_class = [(pred[ye == c] == c).float().mean().item() for c in range(7)]
    return (pred == ye).float().mean().item(), per_class


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--eval", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.data == "synthetic":  # render only what is used: the same distribution, far cheaper
        data = generate(args.seed, (args.train, args.eval, 0))
    else:
        data = load(args.data, seed=args.seed)
    x = data.images["train"][:args.train].float()[:, None] / 255
    y = data.labels["train"][:args.train]
    xe = data.images["val"][:args.eval].float()[:, None] / 255
    ye = data.labels["val"][:args.eval]
    print(f"{data.describe()}: train on {len(y)}, evaluate on {len(ye)} val images, {args.epochs} epochs")
    key = prng.key(args.seed)
    for name, make in (("mlp", mlp), ("simple_cnn", simple_cnn)):
        t = time.time()
        acc, per_class = train_eval(init_(make(), prng.fold_in(key, 1)), x, y, xe, ye, epochs=args.epochs,
                                    key=prng.fold_in(key, 2))
        classes = " ".join(f"{n[:3]} {a:.2f}" for n, a in zip(data.class_names, per_class))
        print(f"{name:>10}: val accuracy {acc:.3f}  ({classes})  [{time.time() - t:.0f} s]")


if __name__ == "__main__":
    main()
