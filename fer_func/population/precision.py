"""Numeric precision of a population, and the device settings that go with it.

    fp32  float32 everywhere (the default on a CPU).
    tf32  float32 storage; on CUDA, matmuls and convolutions may use TF32 tensor cores (10-bit
          mantissa products, float32 accumulation). The default on CUDA. On a CPU it is fp32.
    bf16  bfloat16 autocast for the forward (and so the backward) of the training step and the
          evaluation; parameters, gradients, optimizer state and BatchNorm statistics stay float32
          (master weights), and the loss is taken in float32.

``configure(device, precision)`` applies the process-wide switches (TF32, ``cudnn.benchmark``) and
returns the line a run prints, so a user always sees what their numbers were computed with.
"""
from __future__ import annotations

import contextlib
import sys

import torch

from fer_func import runtime

PRECISIONS = ("fp32", "tf32", "bf16")


def default(device: torch.device | str) -> str:
    return "tf32" if torch.device(device).type == "cuda" else "fp32"


def check(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision = {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


def autocast(precision: str, device_type: str):
    """The context a forward runs in: bf16 autocast, or nothing."""
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


_slow_bf16_warned = False


def warn_if_bf16_is_emulated(device: torch.device) -> None:
    """One stderr line, once per process, where bf16 would run emulated: a silent ~40x slowdown otherwise."""
    global _slow_bf16_warned
    if device.type == "cpu" and not _slow_bf16_warned and runtime.native_bf16() is False:
        _slow_bf16_warned = True
        print(f"warning: precision bf16: this CPU lacks {' and '.join(runtime.BF16_FLAGS)}, so bf16 is emulated "
              f"and runs ~40x slower than float32 here; use --precision fp32", file=sys.stderr, flush=True)


def configure(device: torch.device | str, precision: str) -> str:
    """Set TF32 and cuDNN autotuning for ``precision`` on ``device``; return a one-line description."""
    device = torch.device(device)
    check(precision)
    if precision == "bf16":
        warn_if_bf16_is_emulated(device)
    if device.type != "cuda":
        return f"precision: {precision}" + (" (TF32 is CUDA-only: float32 here)" if precision == "tf32" else "")
    tf32 = precision in ("tf32", "bf16")  # bf16 runs what autocast keeps in float32 (e.g. the loss) as TF32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    # Shapes are static for a whole run, so autotuning each convolution once pays for itself.
    torch.backends.cudnn.benchmark = True
    return f"precision: {precision} (TF32 matmul/conv {'on' if tf32 else 'off'}, cudnn.benchmark on)"
