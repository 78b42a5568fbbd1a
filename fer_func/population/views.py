"""Evaluation views beside the eval program: class probabilities, test-time augmentation (TTA), ensembles.

    run = program(model, MEAN, STD, dtype, chunk, precision, tta, mode, compile, device_type)   # cached, like the step (programs.py)
    p = run(params, model_state, images, start, n)      # (K, T, chunk, 7) in "vmap" mode
    acc, conf = accuracy(p[:, 0], labels), confusions(p[:, 0], labels)         # per variant, host side
    ens = ensemble(p[:, -1], labels, members=[0, 2])    # mean of those members' probabilities

The device program returns probabilities, not metrics, because an ensemble's prediction is the argmax
of its members' *averaged* probabilities: no per-variant sum can be combined afterwards. ``T`` is 1
without TTA (``[plain]``) and 2 with it (``[plain, TTA mean]``): the plain view is the first TTA view,
so one pass gives both. Views are averaged as softmax probabilities (not logits), as the members of
an ensemble are, so the two kinds of averaging compose: ensemble-with-TTA is the mean over members of
each member's mean over views.

The host helpers take numpy arrays of probabilities (K, N, 7); :func:`evaluate_views` (a population's
``evaluate_views``) gathers the chunks of a split into one such array. That holds K * N * 7 numbers: for FER2013's 3,589-image
PublicTest/PrivateTest splits that is 200 KB per variant in float64 (3.2 MB for K = 16), which is
fine; a split of millions of images would want the metrics accumulated per chunk instead.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from fer_func import tree
from fer_func.compile import cached, compile_options, compile_program
from fer_func.population.evaluate import NUM_CLASSES, leading, per_class
from fer_func.population.precision import autocast
from fer_func.population.step import MEAN, STD, normalize

if TYPE_CHECKING:
    from fer_func.population.population import Population

SHIFT = 2  # pixels; a face moved by 2 of 48 pixels is still the same face, like the training rotation's small angles
# (dy, dx) each view moves the image content by, None = the horizontal mirror.
TTA_VIEWS = {None: ((0, 0),),
             "flip": ((0, 0), None),
             "flip+shift": ((0, 0), None, (0, SHIFT), (0, -SHIFT), (SHIFT, 0), (-SHIFT, 0))}


def check_tta(tta):
    if not (tta is None or isinstance(tta, str)) or tta not in TTA_VIEWS:
        raise ValueError(f"tta = {tta!r}: choose one of {', '.join(repr(t) for t in TTA_VIEWS)} "
                         f"(None: no test-time augmentation)")
    return tta


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (B, 1, H, W) in [0, 1] with its content moved ``dy`` pixels down and ``dx`` right.

    Padding and cropping, not ``torch.roll``: the pixels that enter are 0 (black), as the corners the
    training rotation fills (data/augment.py), instead of the opposite edge of the face wrapping round.
    """
    h, w = x.shape[-2:]
    s = max(abs(dy), abs(dx))
    padded = F.pad(x, (s, s, s, s))  # zeros
    return padded[..., s - dy:s - dy + h, s - dx:s - dx + w]


def view(x: torch.Tensor, how) -> torch.Tensor:
    """One TTA view of ``x`` (B, 1, H, W): ``None`` mirrors it, ``(dy, dx)`` shifts it (``(0, 0)``: as is)."""
    if how is None:
        return x.flip(-1)
    return x if how == (0, 0) else shift(x, *how)


def make_view_chunk(model, mean: float, std: float, dtype: torch.dtype, chunk: int, precision: str = "fp32",
                    tta=None):
    """One variant's ``(params, model_state, images, start, n) -> (T, chunk, 7)`` class probabilities.

    Row ``i`` is image ``start + i`` of ``images`` (N, H, W) uint8; rows past ``n`` repeat the last
    image and are cut off by the caller (the chunk size is static, so every split runs one graph).
    ``[0]`` is the plain prediction; with ``tta``, ``[1]`` is the mean over the views. The views run
    one after another in the same graph, so the peak memory is one view's, as for the eval program.
    """
    views = TTA_VIEWS[check_tta(tta)]

    def view_chunk(params, model_state, images, start, n):
        pos = torch.clamp(start + torch.arange(chunk, device=images.device), max=n - 1)
        x = images[pos].unsqueeze(1).to(dtype) / 255.0  # (chunk, 1, H, W) in [0, 1]: views fill with black
        probs = []
        for how in views:
            with autocast(precision, x.device.type):
                logits, _ = model.apply(params, model_state, normalize(view(x, how), mean, std), key=None, train=False)
            probs.append(torch.softmax(logits.to(dtype), -1))  # (chunk, 7)
        if tta is None:
            return probs[0].unsqueeze(0)  # (1, chunk, 7)
        return torch.stack([probs[0], torch.stack(probs).mean(0)])  # (2, chunk, 7)

    return view_chunk


def program(model, mean: float, std: float, dtype: torch.dtype, chunk: int, precision: str, tta, mode: str, compile,
            device_type: str = "cpu"):
    """The (compiled) view program, cached by static structure only, as programs.py caches the step:
    populations of one architecture share it, and new parameters or splits of the same size never
    recompile. ``mode="vmap"`` maps it over the K axis of params and model_state."""
    key = ("view", model, mean, std, dtype, chunk, precision, check_tta(tta), mode, compile, device_type)

    def build():
        fn = make_view_chunk(model, mean, std, dtype, chunk, precision, tta)
        if mode == "vmap":
            fn = torch.func.vmap(fn, in_dims=(0, 0, None, None, None))
        if compile:
            fn = compile_program(fn, key, **compile_options(compile, device_type=device_type))
        return fn

    return cached(key, build)


def evaluate_views(pop: Population, split: str, *, params=None, model_state=None, tta=None, members=None) -> dict:
    """Every variant's class probabilities on ``split``, with test-time augmentation and an ensemble.

    ``tta``: None, "flip" (original + mirror) or "flip+shift" (also 2-pixel shifts).
    ``members``: the ensemble's variants, indices or a boolean mask (default: every variant that has
    not diverged). ``params``/``model_state`` default to the population's current ones, as in
    evaluate.evaluate; pass ``pop.best[...]`` for the best-epoch networks. Returns numpy values:

        acc (K,), confusion (K, 7, 7)          each variant, no TTA
        tta_acc, tta_confusion                 the same with TTA (None without)
        ensemble, tta_ensemble                 {"members", "acc", "confusion", "per_class"} (None: no
                                               members, only when every variant diverged)
        probs, tta_probs (K, N, 7)             for other ensembles (:func:`ensemble`) without another pass

    One cached program per (model, dtype, chunk, precision, tta, mode, compile): repeated calls,
    other parameters, other members and splits of equal size never recompile.
    """
    if split == "val" and pop.folds is not None:
        raise ValueError("evaluate_views('val'): this cross-validation population validates each variant on its "
                         "own Training fold, which an ensemble cannot share; use 'test'")
    params = pop.carry["params"] if params is None else params
    model_state = pop.carry["model_state"] if model_state is None else model_state
    k = leading(params)
    if members is None:  # as the report's means: a diverged variant is left out unless asked for
        members = ~(pop.diverged() if k == len(pop.variants) else pop.carry["diverged"].cpu().numpy())
        members = members if members.any() else None  # all diverged: no ensemble to report
    else:
        members = member_indices(members, k)  # a mistake fails here, before any evaluation
    run = program(pop.model, MEAN, STD, pop.dtype, pop.eval_chunk_size, pop.precision, tta, pop.mode, pop.compile,
                  pop.device.type)
    x, y = pop.data.split(split)
    starts, n = pop._eval_index[split]
    chunks = []
    for s in starts:
        if pop.mode == "vmap":
            chunks.append(run(params, model_state, x, s, n))  # (K, T, chunk, 7)
        else:
            chunks.append(torch.stack([run(tree.index(params, i), tree.index(model_state, i), x, s, n)
                                       for i in range(k)]))
    total = int(y.shape[0])
    probs = torch.cat(chunks, dim=2)[:, :, :total].to(torch.float64).cpu().numpy()  # (K, T, N, 7)
    labels = y.cpu().numpy()

    def summary(p):  # p: (K, N, 7)
        ens = None if members is None else ensemble(p, labels, members)
        return accuracy(p, labels), confusions(p, labels), \
            (None if ens is None else {key: ens[key] for key in ("members", "acc", "confusion", "per_class")})

    acc, conf, ens = summary(probs[:, 0])
    tta_acc, tta_conf, tta_ens = summary(probs[:, 1]) if tta is not None else (None, None, None)
    return {"split": split, "tta": tta, "acc": acc, "confusion": conf, "tta_acc": tta_acc,
            "tta_confusion": tta_conf, "ensemble": ens, "tta_ensemble": tta_ens, "probs": probs[:, 0],
            "tta_probs": probs[:, 1] if tta is not None else None}


# --- host side: (K, N, 7) probabilities -> metrics -------------------------------------------------

def confusion(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(7, 7) counts [true, pred] of one set of predictions (N,) against ``labels`` (N,)."""
    out = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(out, (np.asarray(labels), np.asarray(pred)), 1)
    return out


def confusions(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K, 7, 7) confusion matrix of every variant's probabilities (K, N, 7)."""
    return np.stack([confusion(p.argmax(-1), labels) for p in probs])


def accuracy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K,) accuracy of every variant's probabilities (K, N, 7); ties go to the lower class, as argmax."""
    return (probs.argmax(-1) == np.asarray(labels)[None]).mean(-1)


def member_indices(members, k: int) -> list[int]:
    """``members`` as sorted variant indices: a list of indices, or a boolean mask of length ``k``."""
    arr = np.asarray(members.cpu() if isinstance(members, torch.Tensor) else members)
    if arr.dtype == bool:
        if arr.shape != (k,):
            raise ValueError(f"members: a boolean mask must have one entry per variant ({k}), got shape {arr.shape}")
        idx = np.flatnonzero(arr).tolist()
    else:
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"members = {members!r}: give variant indices (a list of ints) or a boolean mask of "
                             f"length {k}")
        idx = [int(i) for i in arr]
        bad = [i for i in idx if not 0 <= i < k]
        if bad:
            raise ValueError(f"members: indices {bad} out of range; the population has variants 0..{k - 1}")
        if len(set(idx)) != len(idx):
            raise ValueError(f"members = {idx}: an index is repeated; each variant counts once in an ensemble")
    if not idx:
        raise ValueError("members: no variant selected; an ensemble needs at least one member")
    return sorted(idx)


def ensemble(probs: np.ndarray, labels: np.ndarray, members) -> dict:
    """The ensemble of ``members`` (indices or mask over the K axis of ``probs`` (K, N, 7)): the argmax
    of their mean probability. Returns its members, accuracy, confusion and per-class metrics."""
    idx = member_indices(members, probs.shape[0])
    mean = probs[idx].mean(0)  # (N, 7)
    conf = confusion(mean.argmax(-1), labels)
    return {"members": idx, "acc": float(np.trace(conf) / max(len(labels), 1)), "confusion": conf,
            "per_class": per_class(conf), "probs": mean}


def top(scores, m: int, eligible=None) -> list[int]:
    """Indices of the ``m`` highest ``scores`` among ``eligible`` (a mask; default all), ties to the lower index."""
    scores = np.asarray(scores, dtype=float)
    ok = np.ones(len(scores), bool) if eligible is None else np.asarray(eligible, bool)
    pool = [i for i in range(len(scores)) if ok[i]]
    if not 1 <= m <= len(pool):
        raise ValueError(f"top {m}: must be between 1 and the {len(pool)} eligible variants")
    return sorted(sorted(pool, key=lambda i: (-scores[i], i))[:m])
