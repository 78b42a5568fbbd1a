"""What every model family shares: the ``Model`` interface, state-dict conversion, dropout plumbing.

A family is a frozen dataclass whose fields are its static knobs (widths, depths, default dropout
rates), so a built model is hashable and ``torch.compile`` sees it as a constant. Its ``init`` and
``apply`` are pure; parameters and buffers are two flat dicts keyed by the ``state_dict()`` names
of the family's ``torch.nn`` reference, so a checkpoint converts in one call either way.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from fer_func import prng
from fer_func.config import ConfigError

# Each registered family's knob names (name -> knobs), filled by the registry (fer_func/models/__init__.py) as it
# loads, which is before any model exists: the registry imports this module, so this module cannot import it.
KNOBS: dict[str, tuple[str, ...]] = {}

NUM_CLASSES = 7
INPUT_SHAPE = (1, 48, 48)  # (C, H, W) of a FER2013 image


def check_knob(ok: bool, model: str, knob: str, value, why: str):
    if not ok:
        raise ConfigError(f"model {model!r}: knob {knob} = {value!r}: {why}")


def check_widths(model: str, knob: str, value, *, allow_empty: bool = False):
    ok = isinstance(value, tuple) and all(isinstance(v, int) and v > 0 for v in value)
    check_knob(ok and (allow_empty or len(value) > 0), model, knob, value,
               "must be a list of positive integers" + ("" if allow_empty else " (at least one)"))


def check_rate(model: str, knob: str, value):
    check_knob(isinstance(value, (int, float)) and 0 <= value < 1, model, knob, value,
               "a dropout rate must be a number in [0, 1)")


@functools.lru_cache(maxsize=None)
def _shapes(model: "Model") -> tuple[dict, dict]:
    # Meta tensors carry shapes but no data, so even ResNet-18 allocates nothing; the trace still
    # runs every op of init in Python (noticeable for ResNet-18), hence the cache keyed on the (hashable) model.
    params, state = model.init(prng.key(0).to("meta"))
    return ({k: tuple(v.shape) for k, v in params.items()}, {k: tuple(v.shape) for k, v in state.items()})


@functools.lru_cache(maxsize=None)
def _macs(model: "Model") -> int:
    # FlopCounterMode counts convolutions and matmuls from shapes alone, so meta tensors suffice.
    from torch.utils.flop_counter import FlopCounterMode
    params, state = model.init(prng.key(0).to("meta"))
    x = torch.empty((1, *INPUT_SHAPE), device="meta")
    with FlopCounterMode(display=False) as counter:
        model.apply(params, state, x, train=False)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class Model:
    """``init(key) -> (params, state)``; ``apply(params, state, x, *, key, train, dropout) -> (logits, state)``.

    ``x`` is float (B, 1, 48, 48), logits are (B, 7). ``dropout={knob: rate}`` overrides the
    built-in rates with (possibly batched) tensors, so a population varies them in one graph.
    """
    name: str

    def init(self, key: torch.Tensor) -> tuple[dict, dict]:
        raise NotImplementedError

    def apply(self, params: dict, state: dict, x: torch.Tensor, *, key: torch.Tensor | None = None,
              train: bool, dropout: dict | None = None) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def reference(self) -> torch.nn.Module:
        """The same architecture as a plain ``torch.nn`` module (torch's own init and RNG)."""
        raise NotImplementedError

    @property
    def dropout_knobs(self) -> tuple[str, ...]:
        return ()

    @property
    def knobs(self) -> dict:
        """The knobs this model was built with: ``build(model.name, **model.knobs) == model``."""
        return {k: getattr(self, k) for k in KNOBS[self.name]}

    @property
    def shapes(self) -> tuple[dict, dict]:
        """``({param: shape}, {buffer: shape})``, from an init traced on the meta device."""
        return _shapes(self)

    @property
    def param_count(self) -> int:
        """Number of trainable scalars (buffers excluded), as ``sum(p.numel() for p in module.parameters())``."""
        return sum(math.prod(s) for s in self.shapes[0].values())

    @property
    def macs(self) -> int:
        """Multiply-adds of one image's forward pass (convolutions and matmuls; a training step is ~3x)."""
        return _macs(self)

    def to_state_dict(self, params: dict, state: dict) -> dict:
        """One dict for ``reference().load_state_dict(...)`` or ``torch.save``."""
        return {**params, **state}

    def from_state_dict(self, sd: dict) -> tuple[dict, dict]:
        """``(params, state)`` from a reference module's ``state_dict()``; copies, so nothing aliases the module."""
        param_shapes, state_shapes = self.shapes
        expected = param_shapes | state_shapes
        missing = [k for k in expected if k not in sd]
        unexpected = [k for k in sd if k not in expected]
        wrong = {k: (tuple(sd[k].shape), s) for k, s in expected.items() if k in sd and tuple(sd[k].shape) != s}
        if missing or unexpected or wrong:
            raise ValueError(f"state_dict does not fit model {self.name!r} with knobs {self.knobs}: "
                             f"missing {missing}, unexpected {unexpected}, wrong shapes (got, want) {wrong}; "
                             f"build the model with the knobs the checkpoint was trained with")
        own = lambda k: sd[k].detach().clone()
        return {k: own(k) for k in param_shapes}, {k: own(k) for k in state_shapes}

    # --- helpers for the families' apply -------------------------------------------------------

    def _check_input(self, x: torch.Tensor):
        if x.ndim != 4 or tuple(x.shape[1:]) != INPUT_SHAPE:
            raise ValueError(f"model {self.name!r}: x has shape {tuple(x.shape)}, expected (B, 1, 48, 48) "
                             f"float images (add the channel axis with x[:, None])")

    def _dropout_rates(self, dropout: dict | None) -> dict:
        rates = {k: getattr(self, k) for k in self.dropout_knobs}
        for k in dropout or {}:
            if k not in rates:
                raise ConfigError(f"model {self.name!r}: dropout override {k!r} is not one of its dropout "
                                  f"knobs {self.dropout_knobs}")
        return rates | (dropout or {})

    def _dropout_keys(self, key, train: bool, rates: dict, n: int) -> list:
        """One key per dropout site; ``None`` everywhere when no site can drop (eval, or all python zeros)."""
        if not train or not any(torch.is_tensor(r) or r > 0 for r in rates.values()):
            return [None] * n
        if key is None:
            raise ValueError(f"model {self.name!r}: apply(train=True) with dropout rates {rates} needs "
                             f"key=...; pass a fresh fer_func.prng key each step")
        return list(prng.split(key, n).unbind(0))
