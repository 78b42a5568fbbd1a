"""Pytree helpers: the one place that touches ``torch.utils._pytree``.

Every pytree in fer-func is a (possibly nested) ``dict`` of tensors. Model parameters and state
are *flat* dicts whose keys are the reference ``torch.nn`` module's ``state_dict()`` names
(``"features.0.weight"``), so converting to and from a module is a dict merge/split.
Populations stack the same trees with a leading variant axis ``K``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.utils._pytree as pytree

Tree = Any


def tree_map(fn: Callable, tree: Tree, *rest: Tree) -> Tree:
    return pytree.tree_map(fn, tree, *rest)


def leaves(tree: Tree) -> list:
    return pytree.tree_leaves(tree)


def flatten(tree: Tree) -> tuple[list, Any]:
    """The leaves and the structure (its ``str`` names every key) of ``tree``."""
    return pytree.tree_flatten(tree)


def stack(trees: list[Tree]) -> Tree:
    """Stack a list of same-structured trees along a new leading axis (the population axis K)."""
    return tree_map(lambda *xs: torch.stack(xs), *trees)


def unstack(tree: Tree) -> list[Tree]:
    """Inverse of :func:`stack`: one tree per member of the leading axis."""
    k = leaves(tree)[0].shape[0]
    return [index(tree, i) for i in range(k)]


def index(tree: Tree, i) -> Tree:
    """Member ``i`` of a stacked tree (a view; ``clone`` it to own the memory)."""
    return tree_map(lambda x: x[i], tree)


def where(cond: torch.Tensor, a: Tree, b: Tree) -> Tree:
    """Leafwise ``torch.where(cond, a, b)`` with a scalar (or per-variant, under vmap) condition."""
    return tree_map(lambda x, y: torch.where(cond, x, y), a, b)


def prefix(name: str, tree: dict) -> dict:
    """``{"weight": w}`` -> ``{"name.weight": w}``: how a layer's params join a model's flat dict."""
    return {f"{name}.{k}": v for k, v in tree.items()}


def sub(tree: dict, name: str) -> dict:
    """Inverse of :func:`prefix`: the entries under ``name.``, with the prefix removed."""
    p = name + "."
    return {k[len(p):]: v for k, v in tree.items() if k.startswith(p)}


def num_elements(tree: Tree) -> int:
    return sum(x.numel() for x in leaves(tree))


def clone(tree: Tree) -> Tree:
    return tree_map(lambda x: x.clone(), tree)


def to(tree: Tree, device=None, dtype: torch.dtype | None = None) -> Tree:
    """Move every leaf to ``device``; cast floating leaves (only) to ``dtype``."""
    return tree_map(
        lambda x: x.to(device=device, dtype=dtype if x.is_floating_point() else None), tree)
