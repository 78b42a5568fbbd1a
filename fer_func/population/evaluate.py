"""Evaluation of one variant on a fixed-size chunk of a split, and the metrics derived on the host.

The population vmaps :func:`make_eval_chunk` over variants and :func:`evaluate` loops over chunks;
the chunk size is static and the last chunk is masked, so every split of every size runs through one
graph.
The chunk's class probabilities come out beside its loss and confusion matrix: the best-epoch test
pass then also gives the ensembles their PrivateTest probabilities (study/ensembles.py), instead of
a second pass through a third compiled program (views.py) compiled for that alone.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from fer_func import tree
from fer_func.population.plan import Plan
from fer_func.population.precision import autocast
from fer_func.population.step import normalize

if TYPE_CHECKING:
    from fer_func.population.population import Population

NUM_CLASSES = 7
EVAL_CHUNK = 512  # images per evaluation call, at most: bounds the activations an evaluation holds


def even_chunk(sizes: list[int], most: int = EVAL_CHUNK, multiple: int = 8) -> int:
    """The evaluation chunk for splits of ``sizes``: as many chunks as ``most`` needs for the largest,
    each as equal as a ``multiple`` of 8 images allows. The last chunk is padded (and masked), so a
    fixed 512 evaluated FER2013's 3,589 validation images as 4,096, 12% of every pass wasted; 456
    evaluates 3,648."""
    n = max(sizes, default=most)
    if n <= 0:
        return most
    pieces = math.ceil(n / most)
    return min(most, math.ceil(math.ceil(n / pieces) / multiple) * multiple)


def make_eval_chunk(plan: Plan, mean: float, std: float, dtype: torch.dtype, chunk: int, precision: str = "fp32"):
    model = plan.model

    def eval_chunk(params, model_state, images, labels, start, n):
        pos = start + torch.arange(chunk, device=images.device)
        valid = pos < n
        pos = torch.clamp(pos, max=n - 1)
        x = normalize(images[pos].unsqueeze(1).to(dtype) / 255.0, mean, std)
        y = labels[pos]
        with autocast(precision, x.device.type):
            logits, _ = model.apply(params, model_state, x, key=None, train=False)
        logits = logits.to(dtype)
        nll = F.cross_entropy(logits, y, reduction="none")
        probs = torch.softmax(logits, -1)  # as views.py's plain view computes them
        pred = logits.argmax(-1)
        w = valid.to(dtype)
        # confusion[true, pred] as a (7, 7) matmul of one-hots: vmappable, no scatter.
        confusion = (F.one_hot(y, NUM_CLASSES).to(dtype) * w[:, None]).T @ F.one_hot(pred, NUM_CLASSES).to(dtype)
        return torch.where(valid, nll, 0.0).sum(), confusion, probs

    return eval_chunk


def leading(tree_of_stacked) -> int:
    """K of a stacked tree: the leading dimension of its leaves."""
    return int(tree.leaves(tree_of_stacked)[0].shape[0])


def evaluate(pop: Population, split: str, params=None, model_state=None, probs: bool = False) -> dict:
    """Loss, accuracy and confusion matrix per variant of ``pop`` on ``split`` ("val" or "test"); with
    ``probs`` also every variant's class probabilities, ``probs`` (K, N, 7) float64 numpy, from the same
    pass (they are what views.evaluate_views' plain view computes). ``params``/``model_state`` default to
    the population's current ones. The first call's time is ``pop.timing["eval_compile_s"]``."""
    params = pop.carry["params"] if params is None else params
    model_state = pop.carry["model_state"] if model_state is None else model_state
    per_variant = split == "val" and pop.folds is not None  # cross-validation: each variant's own fold
    if per_variant and probs:
        raise ValueError("evaluate('val', probs=True): a cross-validation population's folds differ in size; "
                         "ask for the test split's probabilities")
    if per_variant:
        (x, y, n), starts, program = pop._fold_val, pop._fold_starts, pop._eval_folds
    else:
        (x, y), (starts, n), program = pop.data.split(split), pop._eval_index[split], pop._eval
    loss, confusion, chunks = 0.0, 0.0, []
    for s in starts:
        first = "eval_compile_s" not in pop.timing
        if pop.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        t = time.perf_counter()
        if pop.mode == "vmap":
            l, c, p = program(params, model_state, x, y, s, n)
        else:
            pick = (lambda t, i: t[i]) if per_variant else (lambda t, i: t)
            outs = [pop._eval(tree.index(params, i), tree.index(model_state, i), pick(x, i), pick(y, i), s,
                              pick(n, i)) for i in range(leading(params))]
            l, c, p = (torch.stack([o[j] for o in outs]) for j in range(3))
        if first:  # the first call compiles the eval program: report it apart, like the step's
            pop._sync()
            pop.timing["eval_compile_s"] = time.perf_counter() - t
        loss, confusion = loss + l, confusion + c
        if probs:  # a CUDA graph's outputs are overwritten by its next replay: keep a copy
            chunks.append(p.clone() if pop.cuda_graphs else p)
    confusion = confusion.double().cpu().numpy().round().astype(np.int64)
    total = n.cpu().numpy().astype(np.float64) if per_variant else int(y.shape[0])
    acc = np.trace(confusion, axis1=1, axis2=2) / total
    out = {"loss": loss.double().cpu().numpy() / total, "acc": acc, "confusion": confusion}
    if probs:
        out["probs"] = torch.cat(chunks, dim=1)[:, :total].to(torch.float64).cpu().numpy()
    return out


def per_class(confusion) -> dict:
    """Precision, recall and F1 per class from a confusion matrix [true, pred] (array or nested lists).

    A class never predicted (or never present) gets 0 rather than nan, as sklearn's zero_division=0.
    """
    confusion = np.asarray(confusion, dtype=float)
    tp = np.diag(confusion)
    pred_total, true_total = confusion.sum(0), confusion.sum(1)
    precision = np.divide(tp, pred_total, out=np.zeros_like(tp), where=pred_total > 0)
    recall = np.divide(tp, true_total, out=np.zeros_like(tp), where=true_total > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist()}
