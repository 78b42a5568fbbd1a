"""Synthetic FER: procedurally rendered 48x48 faces whose expression is carried by facial geometry.

The default dataset when no FER2013 file is at hand. It is meant for experiments that mean something:
the class lives in the *shape and position* of small features (mouth curve and opening, brow height
and tilt, eye opening, frown lines, a sneer), under nuisance variation that moves those features
around (head position, scale and roll, face shape, lighting, contrast, blur, noise, occluders). So
convolutions beat an MLP, nothing reaches 100%, and the classic FER confusions are built in: every
expression is rendered at a random *intensity*, blending from Neutral, and neighbouring prototypes
(Fear/Surprise, Sad/Neutral, Angry/Disgust) share most of their features.

Rendering is batched tensor math on a coordinate grid: each feature is a signed distance turned into
soft coverage by a sigmoid (whose width doubles as blur), composited onto skin and background.
Every random number comes from ``fer_func.prng`` keys derived from ``seed``, so a dataset is a pure
function of ``(seed, sizes)``, identical on any machine and independent of the chunk size.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from fer_func import prng
from fer_func.data import cache
from fer_func.data.dataset import CLASS_NAMES, SPLITS, FERData

TRAIN_COUNTS = (3995, 436, 4097, 7215, 4830, 3171, 4965)  # FER2013 Training: Disgust is rare
CHUNK = 256  # images rendered at once: keeps every temporary (CHUNK, 48, 48) tensor in cache
# Canonical-frame rows that can hold eye-region features (y < 0.42) and the mouth (y > -0.06),
# with margins for the largest expressions and softest edges; see the bounds in draw_params.
EYE_ROWS, MOUTH_ROW = 34, 22

# Expression prototypes, one column per class (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral).
# A sample is Neutral + intensity * (prototype - Neutral) + per-sample jitter (JITTER, in the same units).
EXPRESSION = {              # A      D      F      H      Sa     Su     N
    "mouth_curve":   (-0.04, -0.07, -0.05, 0.15, -0.11, 0.00, 0.0),   # corner lift (+ smile, - frown)
    "mouth_open":    (0.00, 0.03, 0.07, 0.05, 0.00, 0.15, 0.0),       # half-height of the opening
    "mouth_width":   (0.21, 0.24, 0.32, 0.33, 0.24, 0.16, 0.26),      # half-width
    "brow_raise":    (0.09, 0.10, 0.24, 0.17, 0.19, 0.29, 0.16),      # brow height above the eye
    "brow_tilt":     (0.09, 0.06, -0.07, 0.00, -0.08, -0.02, 0.0),    # inner end down (+, anger) or up (-, worry)
    "eye_open":      (0.75, 0.55, 1.45, 0.65, 0.80, 1.55, 1.0),       # eye height, relative
    "furrow":        (0.80, 0.50, 0.30, 0.00, 0.35, 0.00, 0.0),       # vertical lines between the brows
    "nose_wrinkle":  (0.20, 0.90, 0.00, 0.00, 0.00, 0.00, 0.0),       # horizontal lines on the nose bridge
    "sneer":         (0.00, 0.06, 0.00, 0.00, 0.00, 0.00, 0.0),       # one mouth corner raised
    "teeth":         (0.00, 0.50, 0.40, 0.80, 0.00, 0.20, 0.0),       # bright band in the open mouth
}
JITTER = {"mouth_curve": 0.04, "mouth_open": 0.02, "mouth_width": 0.04, "brow_raise": 0.045, "brow_tilt": 0.04,
          "eye_open": 0.18, "furrow": 0.3, "nose_wrinkle": 0.3, "sneer": 0.025, "teeth": 0.3}
NEUTRAL = len(CLASS_NAMES) - 1
NAMES = list(EXPRESSION) + [  # nuisance and identity draws, all uniform in [0, 1) and mapped below
    "intensity", "side", "cx", "cy", "scale", "roll", "face_w", "skin", "bg", "bg_grad", "hair", "hair_h", "eye_gap",
    "eye_y", "mouth_y", "light_dir", "light", "contrast", "gamma", "soft", "blur", "noise", "occ", "occ_x", "occ_y",
    "occ_r", "occ_v", "noise_i", "noise_x", "noise_y", "brow_w"]


def _uniform16(key, shape) -> torch.Tensor:
    """Uniforms in (0, 1) with 16-bit resolution, two per Threefry word: the cipher is the costly part
    of generation, and rendering parameters need no finer steps than 1/65536."""
    n, m = shape
    w = prng.bits(key, (n, (m + 1) // 2))
    halves = torch.stack([w >> 16, w & 0xFFFF], -1).reshape(n, 2 * w.shape[1])[:, :m]
    return (halves.to(torch.float32) + 0.5) / 65536


def _lerp(u, lo, hi):
    return lo + (hi - lo) * u


def _cover(d, soft):
    """Soft coverage of a signed distance (negative inside)."""
    return torch.sigmoid(-d / soft)


def _ellipse(u, v, cu, cv, ru, rv, soft):
    """Soft coverage of an axis-aligned ellipse. ``u`` varies along x only and ``v`` along y only, so
    the squared terms are (B, 1, W) and (B, H, 1) and only the last few ops touch every pixel."""
    r = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2
    return torch.sigmoid((1 - torch.sqrt(r)) * (torch.minimum(ru, rv) / soft))


def _box(du, dv, soft):
    """Soft coverage of a box from separable signed distances ``|u - cu| - hu`` and ``|v - cv| - hv``."""
    return torch.sigmoid(-torch.maximum(du, dv) / soft)


def _segment(u, v, au, av, bu, bv, r, soft):
    """Soft coverage of a capsule: the segment a-b thickened by r."""
    pu, pv, du, dv = u - au, v - av, bu - au, bv - av
    h = ((pu * du + pv * dv) / (du * du + dv * dv)).clamp(0, 1)
    return torch.sigmoid((r - torch.sqrt((pu - du * h) ** 2 + (pv - dv * h) ** 2)) / soft)


def _face(p: dict, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The face in its own upright, centred frame: (B, 2, H, W) of (shade, head coverage)."""
    soft = p["soft"]
    head = _ellipse(u, v, 0.0, 0.08, 0.74 * p["face_w"], 0.98 + 0 * soft, soft)
    hair = _cover(v + (0.62 - p["hair_h"]) + 0.25 * u * u, soft)
    img = p["skin"] + hair * (p["hair"] - p["skin"])

    # Eyes, brows, lines and nostrils live in the top EYE_ROWS rows and are mirror images: draw the
    # right half there only and mirror it (a third of the pixels). The mouth lives below MOUTH_ROW.
    ue, ve = u[..., 24:], v[:, :EYE_ROWS]
    ex, ey = p["eye_gap"], p["eye_y"]
    eye_rv = 0.065 * p["eye_open"].clamp(0.2, 2.2)
    eye = _ellipse(ue, ve, ex, ey, 0.13 + 0 * soft, eye_rv, soft)
    pupil = _ellipse(ue, ve, ex, ey, 0.055 + 0 * soft, eye_rv.clamp(max=0.055), soft)
    tilt = p["brow_tilt"]
    by = ey - 0.05 - p["brow_raise"]
    brow = _segment(ue, ve, ex - 0.17, by + tilt, ex + 0.16, by - 0.25 * tilt, p["brow_w"], soft)
    furrow = _box((ue - 0.05).abs() - 0.012, (ve - ey + 0.115).abs() - 0.085, soft)
    wrinkle = _box(ue - 0.1, torch.minimum((ve - ey - 0.06).abs(), (ve - ey - 0.12).abs()) - 0.013, soft)
    nostril = _ellipse(ue, ve, 0.075, p["mouth_y"] - 0.25, 0.04 + 0 * soft, 0.025 + 0 * soft, soft)
    half = ((1 - 0.35 * eye) * (1 - 0.55 * pupil) * (1 - 0.7 * brow)
            * (1 - 0.3 * p["furrow"].clamp(0, 1) * furrow)
            * (1 - 0.3 * p["nose_wrinkle"].clamp(0, 1) * wrinkle) * (1 - 0.35 * nostril))  # (B, EYE_ROWS, 24)
    img = torch.cat([img[:, :EYE_ROWS] * torch.cat([half.flip(-1), half], -1), img[:, EYE_ROWS:]], 1)

    # Mouth: a centre line bent by the curve (and a sneer lifting one corner), lips around it, and an
    # opening whose half-height falls to zero at the corners. All but dv are per-column (B, 1, W).
    vm = v[:, MOUTH_ROW:]
    mw = p["mouth_width"].clamp_min(0.08)
    t = (u / mw).clamp(-1.2, 1.2)
    centre = p["mouth_y"] - p["mouth_curve"] * (t * t) - p["sneer"] * (p["side"] * t).clamp_min(0) * t.abs()
    half_open = p["mouth_open"].clamp_min(0) * torch.sqrt((1 - t * t).clamp_min(0))
    inside = torch.sigmoid((1 - t.abs()) * 0.6 / soft)  # fades out past the corners
    dv = vm - centre
    adv = dv.abs()
    lips = _cover(adv - (half_open + 0.035), soft) * inside
    hole = _cover(adv - (half_open - 0.004), soft) * (inside * (half_open > 0.005))
    teeth_edge = half_open * (0.8 * p["teeth"].clamp(0, 1) - 1)
    teeth = hole * _cover(dv - teeth_edge, soft) * ((p["teeth"] > 0.25) * 0.55 * p["skin"])
    img = torch.cat([img[:, :MOUTH_ROW], img[:, MOUTH_ROW:] * (1 - 0.55 * lips) * (1 - 0.75 * hole) + teeth], 1)
    return torch.stack([img, head.expand_as(img)], 1)


def render(p: dict, bank: torch.Tensor) -> torch.Tensor:
    """Faces from parameters ``p`` (name -> (B,) tensor), float in [0, 1] of shape (B, 48, 48).

    The face is drawn upright and centred, where every feature is separable in x and y (cheap), then
    one ``grid_sample`` applies the head's position, scale and roll; background, lighting and sensor
    effects are added in the image frame afterwards."""
    b = p["cx"].shape[0]
    p = {k: v.view(b, 1, 1) for k, v in p.items()}
    ax = (torch.arange(48, dtype=torch.float32) + 0.5) / 24 - 1  # pixel centres in [-1, 1]
    y, x = ax.view(1, 48, 1), ax.view(1, 1, 48)
    face = _face(p, x, y)  # (B, 2, 48, 48)
    cos, sin, s = torch.cos(p["roll"]).view(b), torch.sin(p["roll"]).view(b), p["scale"].view(b)
    cx, cy = p["cx"].view(b), p["cy"].view(b)
    # Image point q maps to face point R(-roll) (q - c) / scale.
    theta = torch.stack([torch.stack([cos, sin, -(cos * cx + sin * cy)], -1),
                         torch.stack([-sin, cos, sin * cx - cos * cy], -1)], -2) / s.view(b, 1, 1)
    grid = F.affine_grid(theta, [b, 2, 48, 48], align_corners=False)
    shade, head = F.grid_sample(face, grid, mode="bilinear", padding_mode="border", align_corners=False).unbind(1)

    bg = p["bg"] + p["bg_grad"] * x
    img = bg + head * (shade - bg)
    ld = p["light_dir"]
    img = img * (1 + p["light"] * (torch.cos(ld) * x + torch.sin(ld) * y))
    occ = (p["occ"] < 0.2) * _ellipse(x, y, p["occ_x"], p["occ_y"], p["occ_r"], 1.3 * p["occ_r"], p["soft"])
    img = img + occ * (p["occ_v"] - img)
    img = (img.clamp(0, 1) ** p["gamma"] - 0.5) * p["contrast"] + 0.5
    blurred = F.avg_pool2d(F.pad(img[:, None], (1, 1, 1, 1), mode="replicate"), 3, stride=1)[:, 0]
    img = img + p["blur"] * (blurred - img)
    i, oy, ox = (p[k].view(b).long() for k in ("noise_i", "noise_y", "noise_x"))
    r = torch.arange(48)
    noise = bank[i.view(b, 1, 1), (oy.view(b, 1) + r).view(b, 48, 1), (ox.view(b, 1) + r).view(b, 1, 48)]
    return (img + p["noise"] * noise).clamp(0, 1)


def draw_params(key: torch.Tensor, labels: torch.Tensor, bank_size: int) -> dict:
    """Per-sample rendering parameters (name -> (N,) tensor) for the given labels."""
    n = len(labels)
    u = _uniform16(key, (n, len(NAMES) + len(EXPRESSION)))
    uni = dict(zip(NAMES, u[:, :len(NAMES)].unbind(1)))
    z = dict(zip(EXPRESSION, (math.sqrt(2) * torch.erfinv(2 * u[:, len(NAMES):] - 1)).unbind(1)))  # normals
    t = _lerp(uni["intensity"], 0.25, 1.1)
    p = {}
    for name, proto in EXPRESSION.items():
        proto = torch.tensor(proto)
        p[name] = proto[NEUTRAL] + t * (proto[labels] - proto[NEUTRAL]) + JITTER[name] * z[name]
    p["side"] = torch.where(uni["side"] < 0.5, -1.0, 1.0)
    p["cx"], p["cy"] = _lerp(uni["cx"], -0.08, 0.08), _lerp(uni["cy"], -0.05, 0.08)
    p["scale"] = _lerp(uni["scale"], 0.88, 1.1)
    p["roll"] = _lerp(uni["roll"], -1, 1) * math.radians(10)
    p["face_w"] = _lerp(uni["face_w"], 0.85, 1.1)
    p["skin"] = _lerp(uni["skin"], 0.5, 0.8)
    p["bg"] = _lerp(uni["bg"], 0.1, 0.6)
    p["bg_grad"] = _lerp(uni["bg_grad"], -0.25, 0.25)
    p["hair"] = _lerp(uni["hair"], 0.03, 0.5)
    p["hair_h"] = _lerp(uni["hair_h"], -0.1, 0.2)
    p["eye_gap"] = _lerp(uni["eye_gap"], 0.27, 0.35)
    p["eye_y"] = _lerp(uni["eye_y"], -0.24, -0.12)
    p["mouth_y"] = _lerp(uni["mouth_y"], 0.45, 0.56)
    p["brow_w"] = _lerp(uni["brow_w"], 0.035, 0.055)
    p["light_dir"] = uni["light_dir"] * 2 * math.pi
    p["light"] = _lerp(uni["light"], 0.0, 0.25)
    p["contrast"] = _lerp(uni["contrast"], 0.8, 1.25)
    p["gamma"] = _lerp(uni["gamma"], 0.7, 1.4)
    p["soft"] = _lerp(uni["soft"], 0.01, 0.028)
    p["blur"] = _lerp(uni["blur"], 0.0, 0.7)
    p["noise"] = _lerp(uni["noise"], 0.0, 0.035)
    p["occ"] = uni["occ"]
    p["occ_x"], p["occ_y"] = _lerp(uni["occ_x"], -0.8, 0.8), _lerp(uni["occ_y"], -0.6, 0.9)
    p["occ_r"], p["occ_v"] = _lerp(uni["occ_r"], 0.15, 0.4), _lerp(uni["occ_v"], 0.0, 1.0)
    p["noise_i"] = (uni["noise_i"] * bank_size).floor()
    p["noise_x"], p["noise_y"] = (uni["noise_x"] * 16).floor(), (uni["noise_y"] * 16).floor()
    return p


def class_counts(n: int) -> list[int]:
    """``n`` images split over classes in FER2013 Training proportions (largest remainder)."""
    total = sum(TRAIN_COUNTS)
    exact = [n * c / total for c in TRAIN_COUNTS]
    counts = [int(e) for e in exact]
    for i in sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])[: n - sum(counts)]:
        counts[i] += 1
    return counts


def generate_split(key: torch.Tensor, n: int, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    kl, kp = prng.split(key)
    labels = torch.repeat_interleave(torch.arange(len(TRAIN_COUNTS)), torch.tensor(class_counts(n)))
    labels = labels[prng.permutation(kl, n)]
    p = draw_params(kp, labels, bank.shape[0])
    chunks = [render({k: v[i:i + CHUNK] for k, v in p.items()}, bank) for i in range(0, n, CHUNK)]
    images = torch.cat(chunks) if chunks else torch.zeros(0, 48, 48)
    return (images * 255).round().to(torch.uint8), labels


def generate(seed: int = 0, sizes: tuple = (28709, 3589, 3589)) -> FERData:
    """The synthetic FER dataset: ``sizes`` images for train/val/test, a pure function of ``seed``."""
    if len(sizes) != 3 or any(not isinstance(s, int) or s < 0 for s in sizes):
        raise ValueError(f"sizes = {sizes!r}: give three non-negative image counts (train, val, test)")
    root = prng.key(seed)
    # One intra-op thread: each op sees one 256-image chunk (little work), where thread hand-offs
    # cost more than they save, and on a busy machine several threads were many times slower than one.
    # Elementwise ops give identical values for any thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bank = prng.normal(prng.fold_in(root, 1000), (16, 64, 64))  # shared noise fields, cropped per image
        images, labels = {}, {}
        for i, split in enumerate(SPLITS):
            images[split], labels[split] = generate_split(prng.fold_in(root, i), sizes[i], bank)
    finally:
        torch.set_num_threads(threads)
    return FERData(images=images, labels=labels, source=f"synthetic FER (seed {seed})", meta={"seed": seed})


def load(seed: int = 0, cache_dir=None) -> FERData:
    """:func:`generate` with the default sizes, cached as ``.npz``. The cache key includes a hash of
    this file and of ``prng.py``, so any change to the renderer or the keys invalidates old caches by itself."""
    code = hashlib.sha1(Path(__file__).read_bytes() + Path(prng.__file__).read_bytes()).hexdigest()[:12]
    file = cache.cache_path(cache_dir, f"synthetic-{code}-seed{seed}.npz")
    hit = cache.read(file)
    if hit is not None:
        return FERData(images={s: torch.from_numpy(hit[f"x_{s}"]) for s in SPLITS},
                       labels={s: torch.from_numpy(hit[f"y_{s}"]) for s in SPLITS},
                       source=f"synthetic FER (seed {seed})", meta={"seed": seed})
    data = generate(seed)
    cache.write(file, {f"{k}_{s}": d[s].numpy() for s in SPLITS for k, d in (("x", data.images), ("y", data.labels))})
    return data
