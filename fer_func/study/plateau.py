"""Did a configuration finish learning? The plateau test every row and verdict of the results page rests on.

A configuration (its seeds) has reached its plateau when every seed ended on its own (stopped early
on patience, or diverged), or when its seed-mean validation accuracy gained less than
:data:`GAIN` over the last third of its epochs. A row that did neither was cut off by its epoch cap
while still learning, and a conclusion drawn from it measures under-training.

The variants here are results.json entries: ``epochs`` (one record per epoch, a stopped seed's
frozen epochs included) and ``final`` (``stopped_epoch``, 0-based, or None).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

GAIN = 0.01  # one point of validation accuracy


@dataclass(frozen=True)
class Plateau:
    reached: bool
    how: str  # one line of evidence, e.g. "stopped early at epochs 9, 11, 12" or "+2.3 pp over the last 10 of 30 epochs"


def ended_epoch(v: dict) -> int | None:
    """The 1-based epoch a variant ended at on its own (early stop or divergence), or None."""
    final = v.get("final") or {}
    if final.get("stopped_epoch") is not None:
        return int(final["stopped_epoch"]) + 1
    if v.get("diverged"):
        return len(v["epochs"])
    return None


def plateau(variants: list[dict]) -> Plateau:
    ended = [ended_epoch(v) for v in variants]
    if variants and all(e is not None for e in ended):
        return Plateau(True, "every seed ended on its own, at epoch " + ", ".join(map(str, sorted(ended))))
    n = min(len(v["epochs"]) for v in variants) if variants else 0
    curve = [_mean([v["epochs"][e].get("val_acc") for v in variants]) for e in range(n)]
    curve = [x for x in curve if math.isfinite(x)]
    if len(curve) < 3:
        return Plateau(False, f"{len(curve)} epochs: too few to tell")
    third = math.ceil(len(curve) / 3)
    gain = max(curve[-third:]) - max(curve[:-third])
    return Plateau(gain < GAIN, f"{100 * gain:+.1f} pp over the last {third} of {len(curve)} epochs")


def last_trained(v: dict) -> dict | None:
    """The record of the last epoch a variant trained (its stopping epoch, if it stopped early)."""
    final = v.get("final") or {}
    if not v["epochs"] or v.get("diverged"):
        return None
    stop = final.get("stopped_epoch")
    return v["epochs"][min(int(stop), len(v["epochs"]) - 1)] if stop is not None else v["epochs"][-1]


def _mean(xs) -> float:
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return sum(xs) / len(xs) if xs else math.nan
