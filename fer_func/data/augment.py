"""Batched augmentation that runs inside the compiled, vmapped training step.

Everything is a pure function of an explicit key: no global RNG, no Python branching on data, no
host sync, so it traces under ``torch.compile(fullgraph=True)`` and batches under ``torch.func.vmap``
(a population axis K of keys and batches). Sample ``i`` of a batch uses ``split(key, B)[i]`` and
nothing else, so augmenting a batch equals augmenting each image alone with its own key
(:func:`augment_each`), and a variant draws the same augmentations alone or inside a population.

Per image, in this order: horizontal flip (p = ``cfg.flip``); rotation by an angle uniform in
``[-cfg.rotation, cfg.rotation]`` degrees, counter-clockwise for positive angles, bilinear, corners
filled with 0 (torchvision ``rotate`` semantics); brightness then contrast factors uniform in
``[1 - b, 1 + b]`` (torchvision ``adjust_brightness`` / ``adjust_contrast``, each clamped to
[0, 1]; ColorJitter picks a random order, we fix this one). The numeric fields of ``cfg`` are only
used arithmetically, so they may also be 0-d tensors that differ per variant under vmap.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fer_func import prng


def _rotation_grid(angle: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``affine_grid`` for pure rotations, written out (affine_grid has no vmap batching rule).

    The grid maps output to input coordinates (x right, y down, pixel centres, align_corners=False):
    for a visual counter-clockwise turn by ``angle`` that is the turn by ``-angle`` in y-down axes."""
    xs = (2 * torch.arange(w, dtype=angle.dtype, device=angle.device) + 1) / w - 1
    ys = (2 * torch.arange(h, dtype=angle.dtype, device=angle.device) + 1) / h - 1
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    x, y = xs.view(1, 1, w), ys.view(1, h, 1)
    return torch.stack([cos * x - sin * y, sin * x + cos * y], -1)  # (B, H, W, 2)


@torch.library.custom_op("fer_func::bilinear_sample", mutates_args=())
def bilinear_sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample`` (bilinear, zero padding, align_corners=False) as one opaque op of compiled graphs.

    Inductor decomposes grid_sample into index arithmetic it then simplifies symbolically, which made
    the augmenting step's compile many times longer than the same step's without rotation. As an opaque
    op it runs ATen's own kernel, the same numbers as eager.
    The images carry no gradient, so no backward is needed.
    """
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@bilinear_sample.register_fake
def _(x, grid):
    return x.new_empty((x.shape[0], x.shape[1], grid.shape[1], grid.shape[2]))


@bilinear_sample.register_vmap
def _(info, in_dims, x, grid):
    # Fold the vmapped axis into the batch axis: (K, B, ...) -> (K * B, ...), one ATen call for all.
    k = info.batch_size
    x = x.movedim(in_dims[0], 0) if in_dims[0] is not None else x.expand(k, *x.shape)
    grid = grid.movedim(in_dims[1], 0) if in_dims[1] is not None else grid.expand(k, *grid.shape)
    out = bilinear_sample(x.reshape(-1, *x.shape[2:]), grid.reshape(-1, *grid.shape[2:]))
    return out.reshape(k, -1, *out.shape[1:]), 0


def augment_each(keys: torch.Tensor, x: torch.Tensor, cfg) -> torch.Tensor:
    """Augment image ``i`` of ``x`` (B, 1, H, W) in [0, 1] with its own key ``keys[i]`` (B, 2)."""
    if not cfg.enabled:
        return x
    b = x.shape[0]
    u = prng.uniform(keys, (4,), dtype=x.dtype)  # (B, 4): flip, angle, brightness, contrast
    flip = (u[:, 0] < cfg.flip).view(b, 1, 1, 1)
    x = torch.where(flip, x.flip(-1), x)

    if not (isinstance(cfg.rotation, (int, float)) and cfg.rotation == 0):  # static: skip resampling
        angle = (2 * u[:, 1] - 1) * (cfg.rotation * math.pi / 180)  # (B,) radians
        grid = _rotation_grid(angle, *x.shape[-2:])
        x = bilinear_sample(x, grid) if torch.compiler.is_compiling() else \
            F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    brightness = 1 + (2 * u[:, 2] - 1) * cfg.brightness
    x = (x * brightness.view(b, 1, 1, 1)).clamp(0, 1)
    contrast = (1 + (2 * u[:, 3] - 1) * cfg.contrast).view(b, 1, 1, 1)
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    return (contrast * x + (1 - contrast) * mean).clamp(0, 1)


def augment(key: torch.Tensor, x: torch.Tensor, cfg) -> torch.Tensor:
    """Augment a batch ``x`` (B, 1, H, W) in [0, 1]; sample ``i`` uses ``split(key, B)[i]``."""
    return augment_each(prng.split(key, x.shape[0]), x, cfg)


_TRIES = 12  # Marsaglia-Tsang acceptance is above 95% per try: 12 tries all fail with probability < 1e-15


def _gamma(u: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Gamma(a, 1) from uniforms ``u`` of shape (..., 2 * _TRIES + 1), by Marsaglia-Tsang with a fixed
    number of tries (no data-dependent loop, so it compiles and vmaps). For a < 1 it samples
    Gamma(a + 1) and multiplies by U**(1/a). A (never seen) failure of all tries returns the mode d."""
    boost = a < 1
    a1 = torch.where(boost, a + 1, a)
    d = a1 - 1 / 3
    c = 1 / torch.sqrt(9 * d)
    z = math.sqrt(2) * torch.erfinv(2 * u[..., :_TRIES] - 1)  # standard normals
    v = (1 + c[..., None] * z) ** 3
    ok = (v > 0) & (torch.log(u[..., _TRIES:2 * _TRIES]) < 0.5 * z * z + d[..., None] * (1 - v + torch.log(v.clamp_min(1e-30))))
    first = torch.argmax(ok.to(torch.int8), dim=-1, keepdim=True)  # the first accepted try
    g = torch.where(ok.any(-1), torch.gather(d[..., None] * v, -1, first).squeeze(-1), d)
    return torch.where(boost, g * u[..., -1] ** (1 / a), g)


def beta(key, alpha, shape=(1,), dtype=torch.float32):
    """Beta(alpha, alpha) draws (MixUp's mixing weight) as G1 / (G1 + G2), from one uniform draw."""
    lo = 2.0**-23 if dtype != torch.float64 else 2.0**-30  # keeps log(u) and erfinv finite
    u = prng.uniform(key, (*shape, 2, 2 * _TRIES + 1), dtype, low=lo)
    alpha = torch.as_tensor(alpha, dtype=dtype, device=key.device).expand(*shape, 2)
    g = _gamma(u, alpha)
    return g[..., 0] / (g[..., 0] + g[..., 1])


def mixup(key, x, y_onehot, alpha):
    """MixUp (Zhang et al. 2018): one weight lam ~ Beta(alpha, alpha) per batch, mixing each sample with
    a randomly permuted partner: ``lam * a + (1 - lam) * b`` for images and one-hot labels alike.
    ``alpha = 0`` returns the batch unchanged."""
    kl, kp = prng.split(key)
    alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    lam = torch.where(alpha > 0, beta(kl, alpha.clamp_min(1e-3), (1,), x.dtype)[0], torch.ones_like(alpha))
    perm = prng.permutation(kp, x.shape[0])
    return lam * x + (1 - lam) * x[perm], lam * y_onehot + (1 - lam) * y_onehot[perm]


def cutmix(key, x, y_onehot, alpha):
    """CutMix (Yun et al. 2019): paste a box of a permuted partner; box area ~ (1 - lam) with
    lam ~ Beta(alpha, alpha), centre uniform, clipped to the image; labels mix by the pasted area.
    The box is a mask from coordinate comparisons, so shapes never depend on the draw."""
    kl, kp, kc = prng.split(key, 3)
    alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    lam = torch.where(alpha > 0, beta(kl, alpha.clamp_min(1e-3), (1,), x.dtype)[0], torch.ones_like(alpha))
    h, w = x.shape[-2:]
    cut = torch.sqrt(1 - lam)
    centre = prng.uniform(kc, (2,), x.dtype)
    cy, cx = centre[0] * h, centre[1] * w
    y0, y1 = (cy - cut * h / 2).round().clamp(0, h), (cy + cut * h / 2).round().clamp(0, h)
    x0, x1 = (cx - cut * w / 2).round().clamp(0, w), (cx + cut * w / 2).round().clamp(0, w)
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, w)
    box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)  # (H, W)
    perm = prng.permutation(kp, x.shape[0])
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the pasted area decides the label weight
    return torch.where(box, x[perm], x), lam * y_onehot + (1 - lam) * y_onehot[perm]


def class_weights(labels: torch.Tensor, num_classes: int = 7) -> torch.Tensor:
    """Inverse class frequency, normalized to mean 1 over the classes present (absent classes get 0),
    for a class-weighted loss where rare Disgust counts as much as common Happy."""
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float32)
    inv = torch.where(counts > 0, 1 / counts.clamp_min(1), torch.zeros_like(counts))
    return inv * (counts > 0).sum() / inv.sum()
