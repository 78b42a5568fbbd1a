"""How long a run will take here, before it starts: counted multiply-adds over a measured rate.

    seconds ~ sum over variants of epochs * (3 * train images + eval images) * MACs per image / rate
              + one compile per population

A training step costs about three forward passes (forward, input and weight gradients). ``rate`` is
the multiply-add rate a population step achieves, which is far below the machine's peak for the
narrow nets a CPU profile uses: it is the peak of a square float32 matmul, measured here in about
half a second, times ``EFFICIENCY``, the fraction the study's own populations reached on the
2-core CPU the cpu profile was sized on (docs/results.md has the measurement). An estimate, good
to a factor of about 1.5; ``--list`` labels it so.
"""
from __future__ import annotations

import time

import torch

# Achieved fraction of matmul peak for a population training step (measured, see module doc).
# cpu: calibrated on the cpu profile's whole study (docs/results.md, 2026-12-01), which ran well under
# its estimate at 0.12. cuda: a guess until a GPU has run the study.
EFFICIENCY = {"cpu": 0.2, "cuda": 0.25}
COMPILE_S = {"cpu": 60.0, "cuda": 60.0}  # per population, cold inductor cache (docs/results.md)
EVAL_SPLIT = 3589                        # PublicTest, evaluated after every epoch


def peak_gmacs(device, size: int = 1024, seconds: float = 0.4) -> float:
    """Multiply-adds per second (in billions) of a float32 ``size x size`` matmul on ``device``."""
    device = torch.device(device)
    a = torch.full((size, size), 0.5, device=device)  # values do not change a matmul's speed
    b = torch.full((size, size), 0.25, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    sync()
    return n * size**3 / (time.perf_counter() - t0) / 1e9


def variant_macs(v, n_train: int, n_eval: int = EVAL_SPLIT) -> float:
    """Multiply-adds one variant spends on training and per-epoch evaluation."""
    from fer_func.models import build_from
    return v.epochs * (3 * n_train + n_eval) * build_from(v.model).macs


def seconds(variants, n_train: int, n_populations: int, device, rate_gmacs: float) -> float:
    kind = torch.device(device).type
    total = sum(variant_macs(v, n_train) for v in variants)
    return total / (rate_gmacs * 1e9 * EFFICIENCY.get(kind, EFFICIENCY["cpu"])) + n_populations * COMPILE_S.get(kind, 60.0)


def fmt(s: float) -> str:
    return f"~{s / 3600:.1f} h" if s >= 3600 else f"~{s / 60:.0f} min" if s >= 60 else f"~{s:.0f} s"
