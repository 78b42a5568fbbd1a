"""A params tree as one flat buffer, for the optimizer's part of a compiled step.

An optimizer is leafwise arithmetic, so it computes the same numbers on one concatenated buffer
as on the per-tensor tree. Inside a compiled step that matters for compile time: inductor writes
C++ for every loop it generates, and a leafwise update over P tensors (times every rule of a
mixed-optimizer population, times the commit/divergence ``where``) is P loops where the flat
buffer is one. Measured on this 2-core box with ``python -m fer_func.bench.flat_update``
(docs/bench.md): the optimizer part of the regularized CNN's K=19, four-rule population compiled
cold in 38 s of CPU (g++ included) instead of 64 s.

:class:`Ravel` records a tree's keys and shapes; ``flat`` concatenates a params-keyed tree (or
every params-keyed subtree of an optimizer state) into ``{FLAT: buffer}``, and ``unflat`` splits
it back into tensors of the recorded shapes. The carry keeps its per-tensor layout: only the
step's arithmetic is flat.
"""
from __future__ import annotations

import torch

FLAT = "flat"


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
