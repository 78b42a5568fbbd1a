"""Explicit keys: reproducible, statistically sound, and identical alone / under vmap / compiled / vs JAX."""
import json
import math
import pathlib
import re

import pytest
import torch

from fer_func import prng
from fer_func.native import threefry as native_threefry


def test_same_key_gives_bit_identical_draws():
    k = prng.key(123)
    for fn in (lambda k: prng.bits(k, (7, 5)), lambda k: prng.uniform(k, (100,)),
               lambda k: prng.normal(k, (100,)), lambda k: prng.permutation(k, 50)):
        assert torch.equal(fn(k), fn(prng.key(123)))


def test_different_keys_and_split_children_differ():
    a, b = prng.split(prng.key(0))
    assert not torch.equal(a, b)
    assert not torch.equal(prng.uniform(a, (10,)), prng.uniform(b, (10,)))
    assert not torch.equal(prng.fold_in(prng.key(0), 1), prng.fold_in(prng.key(0), 2))


def test_uniform_and_normal_moments():
    n = 200_000
    u = prng.uniform(prng.key(1), (n,), dtype=torch.float64)
    assert 0.0 <= u.min() and u.max() < 1.0
    # 5 standard errors: fails with probability ~1e-6 for a correct generator.
    assert abs(u.mean() - 0.5) < 5 * (1 / 12) ** 0.5 / n**0.5
    assert abs(u.var() - 1 / 12) < 5 * (1 / 180) ** 0.5 / n**0.5
    z = prng.normal(prng.key(2), (n,), dtype=torch.float64)
    assert abs(z.mean()) < 5 / n**0.5
    assert abs(z.var() - 1) < 5 * 2**0.5 / n**0.5
    assert torch.isfinite(prng.normal(prng.key(3), (n,))).all()


def test_split_children_are_uncorrelated():
    n = 100_000
    children = prng.split(prng.key(7), 4)
    draws = torch.stack([prng.uniform(c, (n,), dtype=torch.float64) for c in children])
    corr = torch.corrcoef(draws)
    off_diag = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diag.abs().max() < 5 / n**0.5
    # Neighbouring elements of one stream are uncorrelated too (counter-based generators can fail this).
    x = draws[0]
    assert abs(torch.corrcoef(torch.stack([x[:-1], x[1:]]))[0, 1]) < 5 / n**0.5


def test_bernoulli_rate_and_tensor_probability():
    n = 100_000
    m = prng.bernoulli(prng.key(4), 0.3, (n,))
    assert abs(m.double().mean() - 0.3) < 5 * (0.21 / n) ** 0.5
    p = torch.tensor([0.0, 1.0])
    assert prng.bernoulli(prng.key(5), p[:, None], (2, 1000)).sum(1).tolist() == [0, 1000]


def test_scalar_draws_have_shape_of_the_key_batch():
    assert prng.bits(prng.key(0), ()).shape == ()
    assert prng.uniform(prng.split(prng.key(0), 3), ()).shape == (3,)
    assert torch.equal(prng.uniform(prng.key(0), ()), prng.uniform(prng.key(0), (1,))[0])


def test_permutation_is_a_permutation_and_randint_in_range():
    p = prng.permutation(prng.key(9), 28709)
    assert torch.equal(p.sort().values, torch.arange(28709))
    r = prng.randint(prng.key(9), (10_000,), 3, 10)
    assert r.min() == 3 and r.max() == 9


def _draws(k):
    a, b = prng.split(k)
    return prng.uniform(a, (6, 4)), prng.normal(b, (5,)), prng.bernoulli(prng.fold_in(k, 3), 0.5, (8,)), prng.permutation(b, 9)


def test_vmap_equals_loop_and_compiled_equals_eager():
    keys = torch.stack([prng.key(s) for s in (0, 1, 2**32 + 5)])
    batched = torch.func.vmap(_draws)(keys)
    looped = [torch.stack(xs) for xs in zip(*[_draws(k) for k in keys])]
    compiled = torch.compile(torch.func.vmap(_draws), fullgraph=True)(keys)
    for i, (b, l, c) in enumerate(zip(batched, looped, compiled)):
        assert torch.equal(b, l)
        if i == 1:
            # normal(): inductor's vectorized erfinv may differ from ATen's by 1 ulp; its uniform input
            # is bit-identical (checked through uniform() in the other draws). Used only at init.
            torch.testing.assert_close(b, c, rtol=0, atol=2 * torch.finfo(torch.float32).eps)
        else:
            assert torch.equal(b, c)


def test_matches_jax_bit_for_bit():
    jax = pytest.importorskip("jax", reason="JAX is optional; install it to compare with jax.random")
    import numpy as np
    jax.config.update("jax_threefry_partitionable", True)
    jk = jax.random.PRNGKey(42)
    k = prng.key(42)
    assert np.array_equal(np.asarray(jax.random.split(jk, 5)), prng.split(k, 5).numpy())
    assert np.array_equal(np.asarray(jax.random.fold_in(jk, 7)), prng.fold_in(k, 7).numpy())
    assert np.array_equal(np.asarray(jax.random.bits(jk, (3, 11))), prng.bits(k, (3, 11)).numpy())
    assert np.array_equal(np.asarray(jax.random.uniform(jk, (1000,))), prng.uniform(k, (1000,)).numpy())
    # erfinv differs from XLA's by an ulp or so; everything upstream of it is bit-identical.
    np.testing.assert_allclose(np.asarray(jax.random.normal(jk, (1000,))), prng.normal(k, (1000,)).numpy(),
                               rtol=0, atol=4e-6)


def test_matches_jax_known_answers():
    # jax.random's answers, frozen by scripts/make_known_answers.py, so CI (no JAX) checks them too;
    # the same comparisons as test_matches_jax_bit_for_bit.
    ref = json.loads((pathlib.Path(__file__).parent / "known_answers" / "jax_random.json").read_text())
    for seed, words in ref["prng_key"].items():
        assert prng.key(int(seed)).tolist() == words, seed
    for d in ref["draws"]:
        k = torch.tensor(d["key"], dtype=torch.int64)
        assert prng.split(k, 5).tolist() == d["split_5"]
        for data, child in d["fold_in"].items():
            assert prng.fold_in(k, int(data)).tolist() == child, data
        assert prng.bits(k, (3, 11)).tolist() == d["bits_3x11"]
        # float32 values stored exactly as JSON doubles: equal tensors mean equal bits
        assert torch.equal(prng.uniform(k, (64,)), torch.tensor(d["uniform_64"], dtype=torch.float32))
        torch.testing.assert_close(prng.normal(k, (64,)), torch.tensor(d["normal_64"], dtype=torch.float32),
                                   rtol=0, atol=4e-6)


GLOBAL_RNG = re.compile(r"torch\.(manual_seed|rand|randn|randint|randperm|bernoulli|multinomial|normal)\(|\.(uniform_|normal_|bernoulli_|random_)\(")


def test_no_global_rng_in_library_code():
    root = pathlib.Path(__file__).parents[1] / "fer_func"
    offenders = [f"{p.relative_to(root)}:{i + 1}: {line.strip()}"
                 for p in root.rglob("*.py") for i, line in enumerate(p.read_text().splitlines())
                 if GLOBAL_RNG.search(line)]
    assert not offenders, "global RNG in library code:\n" + "\n".join(offenders)


def test_fold_in_of_a_tensor_counter_compiled_under_vmap_equals_eager():
    # what a population step does every micro-step: fold each variant's step counter into its key
    keys = torch.stack([prng.key(s) for s in (0, 1, 2**32 + 5, 7)])
    steps = torch.tensor([0, 1, 2**32 - 1, 123456789])
    fn = lambda k, s: prng.split(prng.fold_in(k, s), 3)
    compiled = torch.compile(torch.func.vmap(fn), fullgraph=True)(keys, steps)
    assert torch.equal(compiled, torch.stack([fn(k, s) for k, s in zip(keys, steps)]))
    assert torch.equal(prng.fold_op(keys, steps), prng.fold_in(keys, steps))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_native_cipher_equals_the_torch_cipher_bit_for_bit(threads):
    """The C++ kernel (fer_func/native) against the torch ops it replaces on CPU: extreme keys,
    counters that wrap past 2**32, rows split between threads mid-row, empty and one-block draws."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.cat([torch.tensor([[0, 0], [2**32 - 1, 2**32 - 1], [0x1BD11BDA, 0]]),
                      torch.randint(0, 2**32, (4, 2), generator=gen)])
    offset = torch.tensor([0, 2**32 - 3, 5, 2**31, 123, 2**32 - 1, 77])
    for n in (0, 1, 2, 7, 5001):
        native = native_threefry.blocks(rows, n, offset, threads=threads)
        lo = offset[:, None] + torch.arange(n)
        y0, y1 = prng.threefry2x32(rows[:, None, :], torch.zeros_like(lo), lo)
        assert native is not None, "the native kernel did not build on this machine"
        assert torch.equal(native, torch.stack([y0, y1], dim=-1)), n


@pytest.mark.parametrize("native", [True, False], ids=["native", "inductor"])
def test_threefry_op_compiles_once_for_every_key_rank_and_size(native, monkeypatch):
    """Each compile of the opaque cipher costs ~25 s on a cold cache; keys of any rank, any batch
    (including 1 and 2, which dynamic shapes would specialise or duck-size) and any n share one,
    and fold_in's opaque op (any counter) shares it too. On CPU the op runs the native kernel; the
    compiled torch cipher (CUDA's, and CPU's where no compiler builds the kernel) is tested too."""
    if not native:
        monkeypatch.setattr(native_threefry, "blocks", lambda *args, **kwargs: None)
    prng.blocks_op(torch.zeros(4, 2, dtype=torch.int64), 5)  # compiles (or finds the program compiled)
    with torch.compiler.set_stance("fail_on_recompile"):
        for shape, n in [((2,), 1), ((2,), 3), ((1, 2), 2), ((2, 2), 2), ((3, 2), 3), ((4, 3, 2), 7), ((5, 64, 2), 9)]:
            key = torch.arange(math.prod(shape), dtype=torch.int64).reshape(shape)
            out = prng.blocks_op(key, n)
            y0, y1 = prng._eager_blocks(key, n)
            assert torch.equal(out, torch.stack([y0, y1], dim=-1)), (shape, n)
            data = torch.arange(math.prod(shape[:-1]), dtype=torch.int64).reshape(shape[:-1]) * 977 + n
            assert torch.equal(prng.fold_op(key, data), prng.fold_in(key, data)), shape


def test_eager_draws_on_cpu_run_the_native_kernel_and_equal_the_torch_cipher():
    """Parameter init draws eagerly through the native kernel (via blocks_op, so vmap still works):
    the same bits as the torch cipher for one key, a batch of keys, more than one chunk, and under vmap."""
    assert native_threefry.library() is not None, "the native kernel did not build on this machine"
    keys = torch.stack([prng.key(s) for s in (0, 9, 2**40 + 3)])
    for key in (keys[1], keys):
        for n in (1, 5, prng._CHUNK + 17):
            fast, slow = prng._blocks(key, n), prng._eager_blocks(key, n)
            assert all(torch.equal(a, b) for a, b in zip(fast, slow)), (tuple(key.shape), n)
    mapped = torch.func.vmap(lambda k: prng.normal(k, (3, 70)))(keys)
    assert torch.equal(mapped, torch.stack([prng.normal(k, (3, 70)) for k in keys]))


def test_meta_draws_have_shapes_and_skip_the_cipher(monkeypatch):
    """Model.shapes and .macs trace init on the meta device, where the numbers are never read: the
    draw returns meta tensors of the right shape without running ~150 ops per chunk of the cipher."""
    def no_cipher(*args):
        raise AssertionError("the cipher ran on meta tensors")
    monkeypatch.setattr(prng, "threefry2x32", no_cipher)
    key = prng.key(1).to("meta")
    assert prng.uniform(key, (4, 5)).shape == (4, 5) and prng.uniform(key, (4, 5)).device.type == "meta"
    assert prng.split(key, 3).shape == (3, 2)
    assert prng.bits16(torch.stack([key, key]), (2, 9)).shape == (2, 2, 9)
