"""Explicit, functional random keys: JAX's PRNG design, written in plain torch tensor ops.

A *key* is an int64 tensor of shape ``(2,)`` holding two 32-bit words. Every function here is a
pure function of its key: the same key gives bit-identical numbers on CPU and CUDA, eager and
under ``torch.compile``, alone and inside ``torch.func.vmap`` (a batch of keys of shape ``(K, 2)``
just adds a leading axis). There is no global generator.

The block cipher is Threefry-2x32 with 20 rounds, the counter-based generator JAX uses, in its
"partitionable" layout: element ``i`` of a draw is ``threefry(key, (0, i))``, so each number
depends only on the key and its own flat index. That makes draws elementwise (cheap to fuse)
and, in tests, bit-comparable with ``jax.random`` under ``jax_threefry_partitionable=True``.

Words are kept in int64 and masked to 32 bits after every add/shift, so no operation ever
overflows a signed 64-bit integer (C++ overflow would be undefined behaviour in inductor code).
"""
from __future__ import annotations

import math

import torch

from fer_func.native import threefry as threefry_native

_MASK = 0xFFFFFFFF
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def _rotl(x: torch.Tensor, r: int) -> torch.Tensor:
    return ((x << r) & _MASK) | (x >> (32 - r))


def threefry2x32(key: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor):
    """Threefry-2x32 (20 rounds) of the counter pair ``(x0, x1)`` under ``key``; all uint32 in int64."""
    k0, k1 = key[..., 0], key[..., 1]
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0 = (x0 + ks[0]) & _MASK
    x1 = (x1 + ks[1]) & _MASK
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = (x0 + x1) & _MASK
            x1 = _rotl(x1, r) ^ x0
        x0 = (x0 + ks[(i + 1) % 3]) & _MASK
        x1 = (x1 + ks[(i + 2) % 3] + (i + 1)) & _MASK
    return x0, x1


def key(seed: int) -> torch.Tensor:
    """A key from a non-negative integer seed (``jax.random.PRNGKey(seed)`` for seeds < 2**32)."""
    if not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    return torch.tensor([seed >> 32, seed & _MASK], dtype=torch.int64)


_CHUNK = 1 << 16


def _blocks(key: torch.Tensor, n: int):
    """Threefry of counters ``(0, i)`` for ``i < n`` (n < 2**32 in every use here).

    Eager draws of millions of numbers (parameter init) run in cache-sized chunks: the ~150
    elementwise ops per block then reuse small buffers instead of streaming 80 MB temporaries,
    about twice as fast. Inside a compiled graph the cipher is the opaque op ``blocks_op``.
    """
    if torch.compiler.is_compiling():
        out = blocks_op(key, n)
        return out[..., 0], out[..., 1]
    if key.device.type == "meta":  # shapes only (Model.shapes, .macs): the cipher's ~150 ops per chunk would trace for nothing
        empty = key.new_empty((*key.shape[:-1], n))
        return empty, empty
    if key.device.type == "cpu" and threefry_native.library() is not None:
        # The native kernel eagerly too: a large layer's init (an mlp's 1.2 M first-layer weights) is slow
        # through the torch cipher. blocks_op, not the kernel itself, so that vmap (slot re-init) still works.
        out = blocks_op(key, n)
        return out[..., 0], out[..., 1]
    return _eager_blocks(key, n)


def _eager_blocks(key: torch.Tensor, n: int):
    def run(lo):
        return threefry2x32(key[..., None, :], torch.zeros_like(lo), lo)

    if n <= _CHUNK:
        return run(torch.arange(n, dtype=torch.int64, device=key.device))
    parts = [run(torch.arange(s, min(n, s + _CHUNK), dtype=torch.int64, device=key.device))
             for s in range(0, n, _CHUNK)]
    return torch.cat([p[0] for p in parts], dim=-1), torch.cat([p[1] for p in parts], dim=-1)


_compiled_cipher = None


def _cipher(rows: torch.Tensor, n: int, offset: torch.Tensor) -> torch.Tensor:
    """Threefry of counters ``(0, offset[b] + i)`` for ``i < n`` under each row's key: ``(B, 2)``, ``(B,)`` -> ``(B, n, 2)``.

    Every opaque use (:func:`blocks_op` with offset 0, :func:`fold_op` with the folded data as offset)
    comes here. On CPU it is the native kernel (fer_func/native: uint32 lanes, bit-identical, much
    faster than inductor's int64 code for it, and nothing to compile); elsewhere, or where no C++
    compiler builds that kernel, it is one compiled program for every use. Keys of any rank go in as
    one (B, 2) batch, with B and n both at least 2, because dynamic shapes still specialise a size of
    1 (and every new rank or
    specialisation is another compile on a cold cache). The inputs are fresh tensors, not
    views (dynamo also guards on a view's base), made in inference mode, because their dispatch keys
    are guarded too and differ between callers (eager, vmap, a compiled graph's runtime). No duck
    sizing either: it would tie B to the word axis (both 2) or to n when they happen to match.
    """
    native = threefry_native.blocks(rows, n, offset)
    if native is not None:
        return native
    global _compiled_cipher
    if _compiled_cipher is None:
        # Without vectorised loop tails: a noticeably shorter cold compile for slightly more time per
        # draw, which is a small part of a training step.
        _compiled_cipher = torch.compile(_batch_cipher, dynamic=True, options={"cpp.enable_loop_tail_vec": False})
    b, m = rows.shape[0], max(n, 2)
    if b == 1:
        rows, offset = rows.expand(2, 2), offset.expand(2)
    with torch.inference_mode(), torch.fx.experimental._config.patch(use_duck_shape=False):
        return _compiled_cipher(rows.clone(), m, offset.clone())[:b, :n]


def _batch_cipher(words: torch.Tensor, n: int, offset: torch.Tensor) -> torch.Tensor:
    lo = offset[:, None] + torch.arange(n, dtype=torch.int64, device=words.device)
    return torch.stack(threefry2x32(words[:, None, :], torch.zeros_like(lo), lo), dim=-1)


@torch.library.custom_op("fer_func::threefry_blocks", mutates_args=())
def blocks_op(key: torch.Tensor, n: int) -> torch.Tensor:
    """``_blocks`` as one opaque op of compiled graphs: ``(..., 2)`` keys -> ``(..., n, 2)`` words.

    Inlined into a population's graph, the cipher (~160 integer ops) was copied into every kernel
    that read its output, and a derived key's cipher into the cipher using the key, in scalar and
    vector variants: inductor then spent minutes generating C++ for a regularized_cnn step
    (docs/results.md). As an opaque op it is compiled once, on its own, with dynamic sizes, and
    shared by every draw of every population; the numbers are the same integer arithmetic.
    """
    rows = key.reshape(-1, 2)
    words = _cipher(rows, n, torch.zeros(rows.shape[0], dtype=torch.int64, device=key.device))
    return words.reshape(*key.shape[:-1], n, 2).clone()  # a normal tensor again (autograd may save it)


@blocks_op.register_fake
def _(key, n):
    return key.new_empty((*key.shape[:-1], n, 2))


@blocks_op.register_vmap
def _(info, in_dims, key, n):
    # the op already maps over leading key dimensions: move the batch dimension in front
    if in_dims[0] is None:
        return blocks_op(key, n), None
    return blocks_op(key.movedim(in_dims[0], 0), n), 0


@torch.library.custom_op("fer_func::threefry_fold", mutates_args=())
def fold_op(key: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """:func:`fold_in` as an opaque op of compiled graphs: ``(..., 2)`` keys, ``(...)`` data -> ``(..., 2)``.

    A population step folds its step counter into its noise key every micro-step; inlined, that
    one cipher was a ~120-op kernel that inductor generated, vectorised and compiled in every
    population's step (seconds of C++ generation in a regularized_cnn step's cold compile). Here it runs on
    the cipher program :func:`blocks_op` already compiled, counter ``(0, data)``.
    """
    rows = key.reshape(-1, 2)
    words = _cipher(rows, 1, data.reshape(-1))
    return words.reshape(key.shape).clone()


@fold_op.register_fake
def _(key, data):
    return torch.empty_like(key)


@fold_op.register_vmap
def _(info, in_dims, key, data):
    # batch both inputs along a leading dimension of the same size, then fold elementwise
    key = key.movedim(in_dims[0], 0) if in_dims[0] is not None else key.expand(info.batch_size, *key.shape)
    data = data.movedim(in_dims[1], 0) if in_dims[1] is not None else data.expand(info.batch_size, *data.shape)
    return fold_op(key, data), 0


def split(key: torch.Tensor, num: int = 2) -> torch.Tensor:
    """``num`` independent child keys, shape ``(num, 2)``; unpack with ``a, b = split(key)``."""
    y0, y1 = _blocks(key, num)
    return torch.stack([y0, y1], dim=-1)


def fold_in(key: torch.Tensor, data) -> torch.Tensor:
    """A new key that mixes ``data`` (a python int or an integer tensor in [0, 2**32)) into ``key``."""
    data = torch.as_tensor(data, dtype=torch.int64, device=key.device) & _MASK
    if torch.compiler.is_compiling():  # opaque in compiled graphs (see fold_op)
        key, data = torch.broadcast_tensors(key, data[..., None])
        return fold_op(key.contiguous(), data[..., 0].contiguous())
    y0, y1 = threefry2x32(key, torch.zeros_like(data), data)
    return torch.stack([y0, y1], dim=-1)


def bits(key: torch.Tensor, shape) -> torch.Tensor:
    """Uniform 32-bit words (as int64 in [0, 2**32)) of the given static ``shape``."""
    shape = tuple(shape)
    y0, y1 = _blocks(key, math.prod(shape))
    return (y0 ^ y1).reshape(tuple(key.shape[:-1]) + shape)


def bits16(key: torch.Tensor, shape) -> torch.Tensor:
    """Uniform 16-bit words (as int64 in [0, 2**16)): the four halves of each block's two words.

    A quarter of :func:`bits`'s cipher work per number; for draws where 2**-16 resolution is
    plenty (dropout masks), since the cipher dominates a step's non-convolution time on CPU.
    """
    shape = tuple(shape)
    n = math.prod(shape)
    y0, y1 = _blocks(key, (n + 3) // 4)
    words = torch.stack([y0 & 0xFFFF, y0 >> 16, y1 & 0xFFFF, y1 >> 16], dim=-1).flatten(-2)
    return words[..., :n].reshape(tuple(key.shape[:-1]) + shape)


def uniform(key, shape, dtype=torch.float32, low=0.0, high=1.0) -> torch.Tensor:
    """Uniform floats in ``[low, high)``; 23 random mantissa bits, exactly as ``jax.random.uniform``."""
    u = (bits(key, shape) >> 9).to(dtype) * (2.0**-23)
    return torch.clamp(u * (high - low) + low, min=low)


def normal(key, shape, dtype=torch.float32) -> torch.Tensor:
    """Standard normal draws by the inverse CDF (``jax.random.normal``'s method)."""
    lo = math.nextafter(-1.0, 0.0) if dtype == torch.float64 else -1.0 + 2.0**-24
    u = uniform(key, shape, dtype, low=lo, high=1.0)
    return math.sqrt(2.0) * torch.erfinv(u)


def bernoulli(key, p, shape) -> torch.Tensor:
    """Boolean draws, True with probability ``p`` (a float or a tensor broadcastable to ``shape``)."""
    return uniform(key, shape) < p


def randint(key, shape, low: int, high: int) -> torch.Tensor:
    """Integers in ``[low, high)`` (modulo bias below 2**-20 for ranges under 4096)."""
    return low + bits(key, shape) % (high - low)


def permutation(key, n: int) -> torch.Tensor:
    """A uniformly random permutation of ``range(n)``: argsort of 63 random bits per element."""
    y0, y1 = _blocks(key, n)
    sort_key = ((y0 >> 1) << 32) | y1
    return torch.argsort(sort_key, dim=-1, stable=True)
