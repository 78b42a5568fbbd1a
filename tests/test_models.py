"""Every model family against its torch.nn reference, in float64 with default tolerances.

The spine of the project: if these hold, a functional model trains exactly like the module a
reader would have written by hand (logits, every gradient, BatchNorm running statistics).
"""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from fer_func import models, prng, tree
from fer_func.config import ConfigError, ModelConfig

f64 = torch.float64
# Train-mode equivalence needs dropout off: our masks come from prng keys, the module's from torch's RNG.
NO_DROPOUT = {"mlp": dict(dropout=0.0), "simple_cnn": dict(dropout_fc=0.0),
              "regularized_cnn": dict(dropout_conv=0.0, dropout_fc=0.0)}
# prng draws ~1 µs per number on a CPU (Threefry in int64 ops), i.e. 10-20 s for these 10M+ parameter
# models; they take the reference's torch init instead and convert it with from_state_dict.
REFERENCE_INIT = {"large_cnn", "resnet"}


def batch(seed, n=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 48, 48, generator=g, dtype=f64) * 2 + 0.5, torch.randint(0, 7, (n,), generator=g)


def loss_fn(model, x, y, train):
    def loss(params, state):
        logits, new_state = model.apply(params, state, x, train=train)
        return F.cross_entropy(logits, y), (logits, new_state)
    return loss


@pytest.mark.parametrize("name", list(models.FAMILIES))
def test_matches_reference(name):
    model = models.build(name, **NO_DROPOUT.get(name, {}))
    ref = model.reference().double()
    if name in REFERENCE_INIT:
        params, state = model.from_state_dict(ref.state_dict())
    else:
        params, state = tree.to(model.init(prng.key(0)), dtype=f64)
        ref.load_state_dict(model.to_state_dict(params, state))
    # With BatchNorm, three train steps move the running statistics, then evaluation uses them.
    for step, train in enumerate([True, True, True, False] if state else [True, False]):
        x, y = batch(step)
        ref.train(train)
        ref.zero_grad()
        logits_ref = ref(x)
        F.cross_entropy(logits_ref, y).backward()
        grads, (logits, state) = torch.func.grad(loss_fn(model, x, y, train), has_aux=True)(params, state)
        assert_close(logits, logits_ref)
        assert_close(grads, {k: p.grad for k, p in ref.named_parameters()})
        assert_close(state, dict(ref.named_buffers()))
    if state:
        assert state[next(k for k in state if k.endswith("num_batches_tracked"))].item() == 3


@pytest.mark.parametrize("name", list(models.FAMILIES))
def test_state_dict_round_trip_and_names(name):
    model = models.build(name)
    with torch.device("meta"):  # names and shapes only: no memory, no init cost
        ref = model.reference()
    assert list(model.shapes[0]) == [k for k, _ in ref.named_parameters()]
    assert list(model.shapes[1]) == [k for k, _ in ref.named_buffers()]
    assert {**model.shapes[0], **model.shapes[1]} == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert model.param_count == sum(p.numel() for p in ref.parameters())
    ref = model.reference()  # torch's init: cheap on a CPU, unlike prng (see REFERENCE_INIT)
    params, state = model.from_state_dict(ref.state_dict())
    assert_close(model.to_state_dict(params, state), ref.state_dict(), rtol=0, atol=0)
    snapshot = tree.clone((params, state))
    with torch.no_grad():
        for t in ref.state_dict().values():  # state_dict() tensors share the module's storage
            t.add_(1)
    assert_close((params, state), snapshot, rtol=0, atol=0)  # from_state_dict copied; nothing aliases
    ref2 = model.reference()
    ref2.load_state_dict(model.to_state_dict(params, state))
    assert_close(ref2.state_dict(), model.to_state_dict(params, state), rtol=0, atol=0)


def test_param_counts():
    # Pinned so an architecture change is a visible decision (docs/models.md reports the same numbers).
    counts = {name: models.build(name).param_count for name in models.FAMILIES}
    assert counts == {"mlp": 1_345_287, "simple_cnn": 1_207_303, "large_cnn": 10_457_543,
                      "regularized_cnn": 1_764_519, "resnet": 11_171_271, "tiny_cnn": 64_679}


def test_resnet_is_resnet18_with_a_48px_stem():
    import torchvision
    with torch.device("meta"):
        ours = models.build("resnet").reference().state_dict()
        theirs = torchvision.models.resnet18(num_classes=7).state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items() if k != "conv1.weight"} == \
        {k: v.shape for k, v in theirs.items() if k != "conv1.weight"}
    assert ours["conv1.weight"].shape == (64, 1, 3, 3)  # torchvision: (64, 3, 7, 7), then a max-pool


def test_apply_under_vmap_equals_separate_applies():
    model = models.build("regularized_cnn", channels=[8, 16], fc=[32])  # dropout 0.2 / 0.5 stay on
    members = [tree.to(model.init(k), dtype=f64) for k in prng.split(prng.key(2), 3)]
    keys = prng.split(prng.key(3), 3)
    rates = torch.tensor([0.0, 0.3, 0.6], dtype=f64)
    x, _ = batch(4, n=4)

    def apply(params, state, key, rate):
        return model.apply(params, state, x, key=key, train=True, dropout={"dropout_fc": rate})

    logits, states = torch.func.vmap(apply)(tree.stack([p for p, _ in members]),
                                            tree.stack([s for _, s in members]), keys, rates)
    for i, (p, s) in enumerate(members):
        logits_i, state_i = apply(p, s, keys[i], rates[i])
        assert_close(logits[i], logits_i)
        assert_close(tree.index(states, i), state_i)


def test_dropout_override_equals_built_in_rate_and_drops():
    model = models.build("regularized_cnn", channels=[4, 8], fc=[16])
    params, state = model.init(prng.key(4))
    x, _ = batch(5, n=3)
    x = x.float()
    k = prng.key(6)
    built_in, _ = model.apply(params, state, x, key=k, train=True)
    override, _ = model.apply(params, state, x, key=k, train=True,
                              dropout={"dropout_conv": torch.tensor(0.2), "dropout_fc": torch.tensor(0.5)})
    assert_close(override, built_in)
    other_key, _ = model.apply(params, state, x, key=prng.key(7), train=True)
    off, _ = model.apply(params, state, x, key=k, train=True,
                         dropout={"dropout_conv": torch.tensor(0.0), "dropout_fc": torch.tensor(0.0)})
    no_dropout, _ = models.build("regularized_cnn", channels=[4, 8], fc=[16], dropout_conv=0.0,
                                 dropout_fc=0.0).apply(params, state, x, train=True)
    assert not torch.allclose(built_in, other_key)
    assert_close(off, no_dropout)


def test_apply_errors_name_the_problem():
    model = models.build("regularized_cnn", channels=[4], fc=[])
    params, state = model.init(prng.key(0))
    x = torch.zeros(2, 1, 48, 48)
    with pytest.raises(ValueError, match=r"'regularized_cnn'.*needs key="):
        model.apply(params, state, x, train=True)
    model.apply(params, state, x, train=False)  # evaluation needs no key
    with pytest.raises(ConfigError, match=r"override 'dropout'.*\('dropout_conv', 'dropout_fc'\)"):
        model.apply(params, state, x, key=prng.key(0), train=True, dropout={"dropout": 0.1})
    with pytest.raises(ValueError, match=r"shape \(2, 48, 48\), expected \(B, 1, 48, 48\)"):
        model.apply(params, state, x[:, 0], train=False)


def test_from_state_dict_names_missing_and_misshapen_keys():
    model = models.build("tiny_cnn")
    sd = model.to_state_dict(*model.init(prng.key(0)))
    sd.pop("classifier.out.bias")
    sd["features.0.conv1.weight"] = torch.zeros(8, 1, 3, 3)
    with pytest.raises(ValueError, match=r"missing \['classifier.out.bias'\].*features.0.conv1.weight"):
        model.from_state_dict(sd)


def test_build_validates_names_and_knobs():
    with pytest.raises(ConfigError, match=r"model 'large_cnn' has no knob 'dropout_fc'; its knobs are "
                                          r"channels, convs_per_block, fc"):
        models.build("large_cnn", dropout_fc=0.5)
    with pytest.raises(ConfigError, match=r"unknown model; choose one of mlp"):
        models.build("vgg")
    with pytest.raises(ConfigError, match=r"'simple_cnn': knob channels = \(32, 0\)"):
        models.build("simple_cnn", channels=[32, 0])
    with pytest.raises(ConfigError, match=r"at most 5 blocks"):
        models.build("simple_cnn", channels=[8] * 6)
    with pytest.raises(ConfigError, match=r"knob dropout_conv = 1.0: a dropout rate must be a number in \[0, 1\)"):
        models.build("regularized_cnn", dropout_conv=1.0)
    cfg = ModelConfig("regularized_cnn", {"channels": [16, 32], "dropout_fc": 0.3})
    model = models.build_from(cfg)
    assert model == models.build("regularized_cnn", channels=(16, 32), dropout_fc=0.3)
    assert model.channels == (16, 32) and hash(model) == hash(models.build_from(cfg))  # a compile-cache key
    assert model.dropout_knobs == ("dropout_conv", "dropout_fc")
    assert models.build("large_cnn").dropout_knobs == ()
    for name in models.FAMILIES:
        model = models.build(name)
        assert models.build(name, **model.knobs) == model


def test_importing_the_models_and_the_runner_does_not_import_torchvision():
    # torchvision (~1.3 s of a 2-core CPU's start-up) is only needed by ResNet's torch.nn twin, which
    # imports it when built; every command imports fer_func.models, so it must not pay for it.
    code = ("import sys, fer_func.models, fer_func.study.run, fer_func.cli\n"
            "assert 'torchvision' not in sys.modules, 'torchvision imported'\n"
            "fer_func.models.build('resnet').reference()\n"
            "assert 'torchvision' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
