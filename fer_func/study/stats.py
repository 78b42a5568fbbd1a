"""Mean and confidence interval over seeds, with the Student t quantile computed in closed form.

Results over a few seeds are reported as ``mean ± half-width`` of the two-sided t interval
(airbench reports statistics over runs, not single runs). The t quantile needs only integer
degrees of freedom here (seeds - 1), where the CDF has a finite series (Abramowitz & Stegun
26.7.3-4), so no scipy dependency.
"""
from __future__ import annotations

import math


def t_central(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer ``df`` >= 1 degrees of freedom."""
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"df (={df!r}) must be a positive integer")
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:  # odd: (2/pi) [theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)]
        total, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + s * total)
    total, term = 0.0, 1.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    for k in range(1, df // 2 + 1):
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| < t) = ``confidence``: 12.706 for (0.95, 1), 2.776 for (0.95, 4)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence (={confidence!r}) must be in (0, 1)")
    lo, hi = 0.0, 1.0
    while t_central(hi, df) < confidence:
        hi *= 2
    for _ in range(200):  # bisection to float precision; the CDF is monotone
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_central(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the two-sided t interval; half-width is nan for a single value."""
    xs = [float(x) for x in values]
    if not xs:
        raise ValueError("mean_ci needs at least one value")
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return mean, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, t_quantile(confidence, n - 1) * sd / math.sqrt(n)
