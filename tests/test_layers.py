"""Layers against their torch.nn twins (float64, default tolerances) and dropout's key discipline."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from torchvision.models.resnet import BasicBlock, conv1x1

from fer_func import nn as layers
from fer_func import prng, tree

f64 = torch.float64


def randn(*shape, seed=0, dtype=f64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- initializers ------------------------------------------------------------------------------

def test_fans_match_torch():
    for shape in [(7, 2304), (32, 1, 3, 3), (128, 64, 1, 1)]:
        assert layers.fans(shape) == nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


def test_torch_init_is_uniform_with_torch_bounds():
    p = layers.linear_init(prng.key(0), 512, 256)
    bound = 1 / math.sqrt(512)  # kaiming_uniform_(a=sqrt(5)) and the bias bound both reduce to this
    assert p["weight"].shape == (256, 512) and p["bias"].shape == (256,)
    assert p["weight"].dtype == torch.float32
    for v in p.values():
        assert v.abs().max() <= bound
    # U(-b, b) has E[w^2] = b^2 / 3; the sample mean of 131072 squares has relative sd sqrt(0.8 / n) = 0.25%.
    assert abs(p["weight"].pow(2).mean().item() / (bound**2 / 3) - 1) < 5 * math.sqrt(0.8 / p["weight"].numel())
    assert abs(p["weight"].mean().item()) < 5 * bound / math.sqrt(3 * p["weight"].numel())


def test_kaiming_init_is_normal_fan_out():
    p = layers.conv2d_init(prng.key(1), 64, 128, 3, init="kaiming")
    std = math.sqrt(2 / (128 * 9))  # kaiming_normal_(mode="fan_out", nonlinearity="relu")
    n = p["weight"].numel()
    assert abs(p["weight"].pow(2).mean().item() / std**2 - 1) < 5 * math.sqrt(2 / n)
    assert abs(p["weight"].mean().item()) < 5 * std / math.sqrt(n)
    assert torch.equal(p["bias"], torch.zeros(128))


def test_init_is_a_function_of_the_key():
    a, b = layers.conv2d_init(prng.key(3), 4, 8, 3), layers.conv2d_init(prng.key(3), 4, 8, 3)
    c = layers.conv2d_init(prng.key(4), 4, 8, 3)
    assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a["weight"], c["weight"])
    assert "bias" not in layers.conv2d_init(prng.key(3), 4, 8, 3, bias=False)


def test_unknown_init_names_the_choices():
    with pytest.raises(ValueError, match=r"init = 'xavier'.*torch, kaiming"):
        layers.linear_init(prng.key(0), 4, 4, init="xavier")


# --- linear, conv, pooling ---------------------------------------------------------------------

def test_linear_matches_module():
    ref = nn.Linear(5, 3).double()
    x = randn(4, 5)
    assert_close(layers.linear(dict(ref.state_dict()), x), ref(x))


@pytest.mark.parametrize("stride,bias,k", [(1, True, 3), (2, False, 3), (2, True, 1)])
def test_conv2d_matches_module(stride, bias, k):
    ref = nn.Conv2d(3, 5, k, stride=stride, padding=k // 2, bias=bias).double()
    x = randn(2, 3, 9, 9)
    assert_close(layers.conv2d(dict(ref.state_dict()), x, stride=stride), ref(x))


def test_pools_match_modules():
    x = randn(2, 3, 7, 7)  # odd size: the last row and column are dropped, as nn.MaxPool2d does
    assert_close(layers.max_pool2d(x), nn.MaxPool2d(2)(x))
    assert_close(layers.global_avg_pool(x), nn.AdaptiveAvgPool2d(1)(x).flatten(1))


@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (4, 5, 48, 48), (3, 2, 3, 3)])
@pytest.mark.parametrize("relu_first", [False, True])
def test_max_pool_values_and_gradients_equal_aten_even_with_ties(shape, relu_first):
    # Coarse values make many windows hold equal maxima (as flat image regions and ReLU zeros do);
    # the gradient must go to the first maximum in row-major window order, as ATen's does.
    x = (randn(*shape) * 2).round() / 2
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    pre = torch.relu if relu_first else (lambda t: t)
    y_ours, y_theirs = layers.max_pool2d(pre(ours)), nn.MaxPool2d(2)(pre(theirs))
    g = randn(*y_theirs.shape, seed=1)
    (y_ours * g).sum().backward()
    (y_theirs * g).sum().backward()
    assert torch.equal(y_ours, y_theirs) and torch.equal(ours.grad, theirs.grad)


def test_max_pool_compiled_as_populations_compile_it_equals_aten_per_variant_even_with_ties():
    # The population's CPU programs compile ATen's pooling with inductor's own lowering, in the graph's
    # layout (compile/program.py), vmapped over variants: values and gradients, ties included,
    # must still be each variant's nn.MaxPool2d.
    from torch.func import grad, vmap

    from fer_func.compile import compile_options, compile_program
    k, shape = 3, (4, 5, 12, 12)
    x = (randn(k, *shape) * 2).round() / 2  # many equal maxima per window
    g = randn(k, 4, 5, 6, 6, seed=1)
    loss = lambda t, gt: (layers.max_pool2d(torch.relu(t)) * gt).sum()
    run = compile_program(vmap(lambda t, gt: (layers.max_pool2d(torch.relu(t)), grad(loss)(t, gt))),
                          **compile_options(True, device_type="cpu"))
    y, dx = run(x, g)
    for i in range(k):
        xi = x[i].clone().requires_grad_()
        yi = nn.MaxPool2d(2)(torch.relu(xi))
        (yi * g[i]).sum().backward()
        assert torch.equal(y[i], yi) and torch.equal(dx[i], xi.grad)


def test_max_pool_propagates_nan_like_aten():
    x = randn(1, 1, 4, 4)
    x[0, 0, 0, 1] = float("nan")
    torch.testing.assert_close(layers.max_pool2d(x), nn.MaxPool2d(2)(x), equal_nan=True)


# --- batch norm --------------------------------------------------------------------------------

def _bn_module(c, momentum):
    ref = nn.BatchNorm2d(c, momentum=momentum).double()
    with torch.no_grad():  # non-trivial affine parameters, so their gradients matter
        ref.weight.copy_(randn(c, seed=10) + 1)
        ref.bias.copy_(randn(c, seed=11))
    return ref


@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_batch_norm_matches_module_over_steps(momentum):
    ref = _bn_module(3, momentum)
    params = {k: v.detach().clone() for k, v in ref.named_parameters()}
    _, state = layers.batch_norm_init(3)
    state = tree.to(state, dtype=f64)

    def loss(p, s, x, train):
        y, s = layers.batch_norm(p, s, x, train=train, momentum=momentum)
        return (y.sin() * torch.arange(y.numel(), dtype=f64).reshape(y.shape)).sum(), (y, s)

    for step, train in enumerate([True, True, True, False]):
        x = (randn(4, 3, 5, 5, seed=step) * 3 + 2).requires_grad_()
        ref.train(train)
        ref.zero_grad()
        y_ref = ref(x)
        (y_ref.sin() * torch.arange(y_ref.numel(), dtype=f64).reshape(y_ref.shape)).sum().backward()
        before = tree.clone(state)
        (g_p, g_x), (y, new_state) = torch.func.grad(loss, argnums=(0, 2), has_aux=True)(
            params, state, x.detach(), train)
        assert_close(y, y_ref)
        assert_close(g_p, {k: v.grad for k, v in ref.named_parameters()})
        assert_close(g_x, x.grad)
        assert_close(new_state, dict(ref.named_buffers()))
        assert_close(state, before, rtol=0, atol=0)  # nothing was written in place
        state = new_state
    assert new_state["num_batches_tracked"].item() == 3


def test_batch_norm_under_vmap_keeps_one_state_per_variant():
    params = [{"weight": randn(3, seed=s), "bias": randn(3, seed=s + 5)} for s in range(2)]
    states = [tree.to(layers.batch_norm_init(3)[1], dtype=f64) for _ in range(2)]
    xs = torch.stack([randn(4, 3, 2, 2, seed=s + 20) for s in range(2)])
    ys, new = torch.func.vmap(lambda p, s, x: layers.batch_norm(p, s, x, train=True))(
        tree.stack(params), tree.stack(states), xs)
    for i in range(2):
        y, s = layers.batch_norm(params[i], states[i], xs[i], train=True)
        assert_close(ys[i], y)
        assert_close(tree.index(new, i), s)


def test_batch_norm_rejects_a_single_value_per_channel():
    p, s = layers.batch_norm_init(3)
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 3, 1, 1\)"):
        layers.batch_norm(p, s, torch.ones(1, 3, 1, 1), train=True)


# --- residual block ----------------------------------------------------------------------------

@pytest.mark.parametrize("c_in,c_out,stride", [(4, 4, 1), (4, 8, 2)])
def test_basic_block_matches_torchvision(c_in, c_out, stride):
    params, state = tree.to(layers.basic_block_init(prng.key(5), c_in, c_out, stride=stride), dtype=f64)
    down = nn.Sequential(conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out)) if stride != 1 or c_in != c_out else None
    ref = BasicBlock(c_in, c_out, stride, down).double()
    ref.load_state_dict(params | state)  # strict: our names and shapes are torchvision's
    assert list(params) == [k for k, _ in ref.named_parameters()]

    def loss(p, s, x, train):
        y, s = layers.basic_block(p, s, x, stride=stride, train=train)
        return y.pow(2).sum(), (y, s)

    for step, train in enumerate([True, True, False]):
        x = randn(3, c_in, 6, 6, seed=step)
        ref.train(train)
        ref.zero_grad()
        y_ref = ref(x)
        y_ref.pow(2).sum().backward()
        g, (y, state) = torch.func.grad(loss, has_aux=True)(params, state, x, train)
        assert_close(y, y_ref)
        assert_close(g, {k: v.grad for k, v in ref.named_parameters()})
        assert_close(state, dict(ref.named_buffers()))


# --- dropout -----------------------------------------------------------------------------------

def test_dropout_same_key_same_mask_and_scaled_survivors():
    x = torch.rand(64, 32) + 1  # strictly positive, so a zero means "dropped"
    k = prng.key(7)
    a = layers.dropout(x, 0.3, key=k, train=True)
    b = layers.dropout(x, 0.3, key=k, train=True)
    c = layers.dropout(x, 0.3, key=prng.key(8), train=True)
    assert torch.equal(a, b)
    assert not torch.equal(a != 0, c != 0)
    assert_close(a[a != 0], x[a != 0] / 0.7)


def test_dropout_mask_is_its_documented_function_of_the_key():
    x = torch.rand(5, 7, dtype=f64) + 1
    k = prng.key(3)
    keep = prng.bits16(k, (5, 7)) >= math.ceil(0.2 * 65536)
    assert torch.equal(layers.dropout(x, 0.2, key=k, train=True), x * keep / (1 - 0.2))
    # bits16: each Threefry block's two 32-bit words, low half first
    w0, w1 = prng._blocks(k, 3)
    halves = torch.stack([w0 & 0xFFFF, w0 >> 16, w1 & 0xFFFF, w1 >> 16], -1).flatten()
    assert torch.equal(prng.bits16(k, (3, 3)).flatten(), halves[:9])


def test_dropout_is_identity_in_eval_and_at_rate_zero():
    x = torch.rand(8, 8)
    assert layers.dropout(x, 0.5, key=None, train=False) is x
    assert layers.dropout(x, 0.0, key=None, train=True) is x
    assert torch.equal(layers.dropout(x, torch.tensor(0.0), key=prng.key(0), train=True), x)


def test_dropout_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs key="):
        layers.dropout(torch.ones(3), 0.5, key=None, train=True)
    with pytest.raises(ValueError, match=r"rate = 1.0 must be in \[0, 1\)"):
        layers.dropout(torch.ones(3), 1.0, key=prng.key(0), train=True)


def test_dropout_fraction_matches_rate():
    n = 200_000
    for rate in (0.1, 0.5, 0.8):
        dropped = (layers.dropout(torch.ones(n), rate, key=prng.key(11), train=True) == 0).double().mean().item()
        assert abs(dropped - rate) < 5 * math.sqrt(rate * (1 - rate) / n)


def test_dropout_vmap_over_keys_and_tensor_rates_equals_loop():
    x = torch.rand(3, 50, 40) + 1
    keys = prng.split(prng.key(12), 3)
    rates = torch.tensor([0.1, 0.5, 0.9])
    out = torch.func.vmap(lambda x, k, r: layers.dropout(x, r, key=k, train=True))(x, keys, rates)
    for i in range(3):
        assert torch.equal(out[i], layers.dropout(x[i], rates[i], key=keys[i], train=True))
        dropped = (out[i] == 0).double().mean().item()
        assert abs(dropped - rates[i].item()) < 5 * math.sqrt(0.25 / 2000)
    # a python rate draws the same mask as the equal tensor rate
    assert torch.equal(out[1], layers.dropout(x[1], 0.5, key=keys[1], train=True))


def test_dropout_compiled_equals_eager():
    fn = lambda x, k, r: layers.dropout(x, r, key=k, train=True)
    x, k, r = torch.rand(16, 24) + 1, prng.key(13), torch.tensor(0.4)
    compiled = torch.compile(fn, fullgraph=True)(x, k, r)
    eager = fn(x, k, r)
    assert torch.equal(compiled, eager)  # same mask, same scaling, bit for bit
