"""A params tree as one flat buffer, for the optimizer's part of a compiled step.

An optimizer is leafwise arithmetic, so it computes the same numbers on one concatenated buffer
as on the per-tensor tree. Inside a compiled step that matters for compile time: inductor writes
C++ for every loop it generates, and a leafwise update over P tensors (times every rule of a
mixed-optimizer population, times the commit/divergence ``where``) is P loops where the flat
buffer is one, so the optimizer part of a mixed-optimizer population compiles cold in much less
CPU time (``python scripts/flat_update.py`` measures it on your machine; docs/bench.md).

:class:`Ravel` records a tree's keys and shapes; ``flat`` concatenates a params-keyed tree (or
every params-keyed subtree of an optimizer state) into ``{FLAT: buffer}``, and ``unflat`` splits
it back into tensors of the recorded shapes. The carry keeps its per-tensor layout: only the
step's arithmetic is flat.

The flat buffer is not free at run time: concatenating the params, gradients and both Adam moments
and splitting the results back is about three times the update's own memory traffic. That is noise
for a model of many small tensors (the cpu profile's regularized CNN: 16 tensors, 0.17 M parameters
per variant) and most of the step for one of a few large ones: the mlp's population (8 tensors,
1.35 M parameters per variant) steps markedly slower flat than per tensor.
:func:`layout` picks per model: flat only where there are enough tensors for it to save compiled code.
"""
from __future__ import annotations

import torch

FLAT = "flat"
# Flat from this many parameter tensors up. Below it the per-tensor update is a few loops anyway
# (mlp 8, simple_cnn 10, tiny_cnn 4 tensors), above it the tensors are small (large_cnn's step
# runs equally fast either way) and the compile saving is what matters.
MIN_FLAT_TENSORS = 12


class Ravel:
    """The layout of one params tree: its keys (in order) and shapes."""

    def __init__(self, params: dict):
        self.keys = list(params)
        self.shapes = [params[k].shape for k in self.keys]
        self.sizes = [params[k].numel() for k in self.keys]
        dtypes = {params[k].dtype for k in self.keys}
        if len(dtypes) > 1:
            raise ValueError(f"params mix dtypes {sorted(map(str, dtypes))}; one flat buffer needs one dtype")

    def _is_params(self, node) -> bool:
        return isinstance(node, dict) and len(node) == len(self.keys) and set(node) == set(self.keys)

    def flat(self, node):
        """``node`` with the params tree (or every params-keyed subtree) replaced by ``{FLAT: buffer}``."""
        if self._is_params(node):
            return {FLAT: torch.cat([node[k].reshape(-1) for k in self.keys])}
        if isinstance(node, dict):
            return {k: self.flat(v) for k, v in node.items()}
        return node

    def unflat(self, node, like):
        """Inverse of :meth:`flat`, following ``like`` (the tree ``flat`` was given): contiguous tensors."""
        if self._is_params(like):
            parts = torch.split(node[FLAT], self.sizes)
            out = {k: p.reshape(s).contiguous() for k, p, s in zip(self.keys, parts, self.shapes)}
            return {k: out[k] for k in like}  # like's key order: it is part of the carry's compiled spec
        if isinstance(like, dict):
            return {k: self.unflat(node[k], like[k]) for k in like}
        return node


class PerTensor:
    """The identity layout: :meth:`Ravel.flat` and :meth:`Ravel.unflat` that leave the tree as it is."""

    @staticmethod
    def flat(node):
        return node

    @staticmethod
    def unflat(node, like):
        return node


def layout(params: dict):
    """The layout the step's optimizer part works in: a :class:`Ravel` (one flat buffer) for models of
    ``MIN_FLAT_TENSORS`` parameter tensors or more, :class:`PerTensor` below (see the module's note)."""
    return Ravel(params) if len(params) >= MIN_FLAT_TENSORS else PerTensor()
