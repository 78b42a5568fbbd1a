"""Verdicts on a claim from per-seed results: holds, does not hold, or within noise.

A claim compares two settings (``a > b``, ``a < b`` or ``|a - b| < tolerance``) on per-seed values.
The difference is a t-interval: paired over the seeds both sides ran (they share init and data
order, so pairing removes most seed noise), else Welch's unpaired interval. The claim holds when
the interval excludes 0 in its direction, does not hold when it excludes 0 the other way, and is
within noise otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from fer_func.study.stats import mean_ci, t_quantile

HOLDS, FAILS, NOISE, UNTESTED = "holds", "does not hold", "within noise", "not tested"
NOT_CONVERGED = "not converged"  # the claim rests on a row cut off by its epoch cap while still learning
CLOSE = 0.02         # "64 close to 16": the original's 1-point gap, with a point of slack


@dataclass(frozen=True)
class Comparison:
    """``a - b`` as mean ± t-interval half-width (fractions) and what it says about the claim."""
    verdict: str
    mean: float = math.nan
    half: float = math.nan
    n: int = 0
    paired: bool = False
    note: str = ""                  # replaces the numbers when there were none to compare

    def text(self) -> str:
        if self.note:
            return self.note
        if not math.isfinite(self.half):
            return f"Δ {100 * self.mean:+.1f} pp (a side with one seed: no interval)"
        how = f"{self.n} paired seeds" if self.paired else f"unpaired, {self.n} runs"
        return f"Δ {100 * self.mean:+.1f} ± {100 * self.half:.1f} pp ({how})"


def verdict(mean: float, half: float, claim: str = ">") -> str:
    """HOLDS if the interval excludes 0 in the claimed direction (``>``: a > b), FAILS if in the other, else NOISE."""
    sign = {">": 1, "<": -1}[claim]
    if not (math.isfinite(mean) and math.isfinite(half)):
        return NOISE
    lo, hi = sign * mean - half, sign * mean + half
    return HOLDS if lo > 0 else FAILS if hi < 0 else NOISE


def difference(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> tuple[float, float, int, bool]:
    """(mean, half-width, n, paired) of a - b: paired over common seeds when there are two or more, else Welch."""
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        m, h = mean_ci([a[s] - b[s] for s in common], confidence)
        return m, h, len(common), True
    xs, ys = list(a.values()), list(b.values())
    ma, mb = sum(xs) / len(xs), sum(ys) / len(ys)
    if len(xs) < 2 or len(ys) < 2:
        return ma - mb, math.nan, len(xs) + len(ys), False
    va = sum((x - ma) ** 2 for x in xs) / (len(xs) - 1) / len(xs)
    vb = sum((y - mb) ** 2 for y in ys) / (len(ys) - 1) / len(ys)
    if va + vb == 0:
        return ma - mb, 0.0, len(xs) + len(ys), False
    # Welch-Satterthwaite degrees of freedom, floored to an integer (stats.t_quantile's), which widens the interval.
    df = (va + vb) ** 2 / (va ** 2 / (len(xs) - 1) + vb ** 2 / (len(ys) - 1))
    return ma - mb, t_quantile(confidence, max(1, int(df))) * math.sqrt(va + vb), len(xs) + len(ys), False


def compare(a: dict[int, float], b: dict[int, float], claim: str = ">", confidence: float = 0.95) -> Comparison:
    """Test the claim ``a > b`` (or ``a < b``) on per-seed values; see :func:`verdict`."""
    if not a or not b:
        return Comparison(UNTESTED, note="no finite values to compare")
    m, h, n, paired = difference(a, b, confidence)
    return Comparison(verdict(m, h, claim), m, h, n, paired)


def close(a: dict[int, float], b: dict[int, float], tolerance: float = CLOSE, confidence: float = 0.95) -> Comparison:
    """Test ``|a - b| < tolerance``: HOLDS if the whole interval lies inside ±tolerance, FAILS if wholly outside."""
    if not a or not b:
        return Comparison(UNTESTED, note="no finite values to compare")
    m, h, n, paired = difference(a, b, confidence)
    if not math.isfinite(h):
        return Comparison(NOISE, m, h, n, paired)
    inside = -tolerance < m - h and m + h < tolerance
    outside = m - h >= tolerance or m + h <= -tolerance
    return Comparison(HOLDS if inside else FAILS if outside else NOISE, m, h, n, paired)


def combine(verdicts) -> str:
    """A claim made of parts: every part holds -> HOLDS; any part fails -> FAILS; nothing tested -> UNTESTED."""
    vs = list(verdicts)
    if not vs or all(v == UNTESTED for v in vs):
        return UNTESTED
    if FAILS in vs:
        return FAILS
    return HOLDS if all(v == HOLDS for v in vs) else NOISE
