"""Augmentation: per-sample keys, vmap and compile equivalence, geometry that does what it claims, MixUp/CutMix."""
import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from fer_func import prng
from fer_func.config import AugmentConfig
from fer_func.data import augment, augment_each, class_weights, cutmix, mixup
from fer_func.data.augment import beta

ON = AugmentConfig(enabled=True, rotation=15.0, flip=0.5, brightness=0.3, contrast=0.3)


def images(b=6, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, 48, 48, generator=g, dtype=dtype)


def test_batch_equals_each_image_alone():
    x = images(8)
    key = prng.key(3)
    out = augment(key, x, ON)
    keys = prng.split(key, 8)
    for i in range(8):
        torch.testing.assert_close(out[i], augment_each(keys[i:i + 1], x[i:i + 1], ON)[0], rtol=0, atol=0)


def test_same_key_is_bit_identical_and_keys_differ():
    x = images()
    a, b = augment(prng.key(1), x, ON), augment(prng.key(1), x, ON)
    assert torch.equal(a, b)
    assert not torch.equal(a, augment(prng.key(2), x, ON))
    assert torch.equal(augment(prng.key(1), x, AugmentConfig(enabled=False)), x)


def test_vmap_over_a_population_equals_a_loop():
    k, x = prng.split(prng.key(0), 3), torch.stack([images(4, seed=s) for s in range(3)])  # (K, B, 1, 48, 48)
    out = torch.func.vmap(lambda key, xb: augment(key, xb, ON))(k, x)
    for i in range(3):
        torch.testing.assert_close(out[i], augment(k[i], x[i], ON))


def test_per_variant_tensor_hyperparameters_under_vmap():
    """Numeric fields may be 0-d tensors batched per variant (a population sweeping augmentation)."""
    class Cfg:  # the engine's view of an AugmentConfig: same fields, tensors where variants differ
        def __init__(self, rotation, flip):
            self.enabled, self.rotation, self.flip, self.brightness, self.contrast = True, rotation, flip, 0.2, 0.1
    k, x = prng.split(prng.key(5), 2), torch.stack([images(4, seed=s) for s in range(2)])
    rot, flip = torch.tensor([0.0, 30.0]), torch.tensor([1.0, 0.0])
    out = torch.func.vmap(lambda key, xb, r, f: augment(key, xb, Cfg(r, f)))(k, x, rot, flip)
    for i in range(2):
        torch.testing.assert_close(out[i], augment(k[i], x[i], Cfg(float(rot[i]), float(flip[i]))))


@pytest.mark.slow
def test_compiled_equals_eager():
    x = images(4)
    key = prng.key(7)
    compiled = torch.compile(lambda k, xb: augment(k, xb, ON), fullgraph=True)
    torch.testing.assert_close(compiled(key, x), augment(key, x, ON))
    # vmapped over variants (keys) and images, as in a population: the opaque bilinear_sample op's
    # batching rule folds the variant axis into the batch and must give each variant its own result
    keys, xs = prng.split(prng.key(8), 3), torch.stack([images(4, seed=s) for s in range(3)])
    batched = torch.compile(torch.func.vmap(lambda k, xb: augment(k, xb, ON)), fullgraph=True)(keys, xs)
    shared = torch.compile(torch.func.vmap(lambda k, xb: augment(k, xb, ON), in_dims=(0, None)),
                           fullgraph=True)(keys, xs[0])
    for i in range(3):
        torch.testing.assert_close(batched[i], augment(keys[i], xs[i], ON))
        torch.testing.assert_close(shared[i], augment(keys[i], xs[0], ON))


def test_flip_only_and_flip_twice_is_identity():
    x = images()
    flip_all = AugmentConfig(enabled=True, rotation=0.0, flip=1.0, brightness=0.0, contrast=0.0)
    once = augment(prng.key(0), x, flip_all)
    assert torch.equal(once, x.flip(-1))
    assert torch.equal(augment(prng.key(1), once, flip_all), x)
    none = AugmentConfig(enabled=True, rotation=0.0, flip=0.0, brightness=0.0, contrast=0.0)
    torch.testing.assert_close(augment(prng.key(0), x, none), x)


def test_flip_probability():
    x = torch.arange(48.0).view(1, 1, 1, 48).expand(4000, 1, 48, 48) / 47
    cfg = AugmentConfig(enabled=True, rotation=0.0, flip=0.3, brightness=0.0, contrast=0.0)
    flipped = augment(prng.key(0), x, cfg)[:, 0, 0, 0] > 0.5
    assert abs(flipped.float().mean().item() - 0.3) < 0.03  # 4.2 standard errors


class Turn:
    """A config that rotates by exactly ``degrees`` with ``key``: rotation = degrees / (2u - 1) for the key's u."""
    def __init__(self, key, degrees):
        u = prng.uniform(key, (4,), dtype=torch.float64)[1].item()
        self.enabled, self.flip, self.brightness, self.contrast = True, 0.0, 0.0, 0.0
        self.rotation = degrees / (2 * u - 1)


def turn(x, degrees):
    """Rotate every image of ``x`` by ``degrees`` through augment_each, with a key whose draw allows it."""
    keys = prng.split(prng.key(0), 64)
    u = prng.uniform(keys, (4,), dtype=torch.float64)[:, 1]
    key = keys[torch.nonzero((2 * u - 1) * math.copysign(1, degrees) > 0.5)[0, 0]]  # rotation stays <= 2|degrees|
    return augment_each(key.expand(len(x), 2), x, Turn(key, degrees))


def test_rotation_by_90_degrees_is_rot90_counter_clockwise():
    x = images(2, dtype=torch.float64)
    torch.testing.assert_close(turn(x, 90.0), torch.rot90(x, 1, (-2, -1)))
    torch.testing.assert_close(turn(x, -90.0), torch.rot90(x, -1, (-2, -1)))


def test_rotation_matches_torchvision_and_undoes_itself():
    x = torch.zeros(1, 1, 48, 48, dtype=torch.float64)
    x[..., 20:28, 10:40] = 0.7  # a horizontal bar
    x = x + torch.linspace(0, 0.3, 48, dtype=torch.float64)  # and a ramp, so nothing is symmetric
    ours = turn(x, 23.0)
    theirs = TF.rotate(x, 23.0, interpolation=TF.InterpolationMode.BILINEAR)
    torch.testing.assert_close(ours, theirs)
    back = turn(ours, -23.0)
    # Bilinear resampling twice low-passes edges, so compare where the pattern is smooth: the ramp's
    # interior away from the bar edges, and the bar's mass overall.
    smooth = (slice(None), slice(None), slice(34, 40), slice(18, 30))
    torch.testing.assert_close(back[smooth], x[smooth], atol=1e-3, rtol=0)
    torch.testing.assert_close(back[..., 12:36, 12:36].sum(), x[..., 12:36, 12:36].sum(), rtol=2e-2, atol=0)


def test_brightness_and_contrast_match_torchvision_and_stay_in_range():
    x = images(64)
    cfg = AugmentConfig(enabled=True, rotation=0.0, flip=0.0, brightness=0.4, contrast=0.4)
    keys = prng.split(prng.key(9), 64)
    out = augment_each(keys, x, cfg)
    u = prng.uniform(keys, (4,))
    for i in range(64):
        b, c = 1 + (2 * u[i, 2] - 1) * 0.4, 1 + (2 * u[i, 3] - 1) * 0.4
        assert 0.6 <= b <= 1.4 and 0.6 <= c <= 1.4
        ref = TF.adjust_contrast(TF.adjust_brightness(x[i], b.item()), c.item())
        torch.testing.assert_close(out[i], ref)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("alpha", [0.4, 1.0, 2.0])
def test_beta_moments(alpha):
    keys = prng.split(prng.key(int(alpha * 10)), 1)
    n = 3000
    lam = beta(keys[0], alpha, (n,), torch.float64)
    mean, var = 0.5, 1 / (4 * (2 * alpha + 1))
    se = math.sqrt(var / n)
    assert abs(lam.mean().item() - mean) < 5 * se
    assert abs(lam.var().item() - var) < 0.12 * var  # about 4 sd of the sample variance
    assert lam.min() > 0 and lam.max() < 1


def test_mixup_and_cutmix_mix_images_and_labels_consistently():
    x = images(8, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.arange(8) % 7, 7).to(torch.float64)
    key = prng.key(4)
    xm, ym = mixup(key, x, y, 0.4)
    perm = prng.permutation(prng.split(key)[1], 8)
    lam = ym[torch.arange(8), (torch.arange(8) % 7)]  # weight on each sample's own class (perm may share it)
    distinct = (torch.arange(8) % 7) != (perm % 7)
    lam0 = lam[distinct][0]
    torch.testing.assert_close(xm, lam0 * x + (1 - lam0) * x[perm])
    torch.testing.assert_close(ym.sum(1), torch.ones(8, dtype=torch.float64))
    assert torch.equal(mixup(key, x, y, 0.0)[0], x)

    xc, yc = cutmix(key, x, y, 1.0)
    pasted = (xc != x).any(0).any(0)  # (H, W): where some sample changed, i.e. the box
    rows, cols = pasted.any(1).nonzero(), pasted.any(0).nonzero()
    area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) if len(rows) else 0
    kl, kp, kc = prng.split(key, 3)
    perm = prng.permutation(kp, 8)
    lam = 1 - area / 2304
    torch.testing.assert_close(yc, lam * y + (1 - lam) * y[perm])
    torch.testing.assert_close(xc[:, :, ~pasted], x[:, :, ~pasted])
    assert torch.equal(cutmix(key, x, y, 0.0)[0], x)


@pytest.mark.slow
def test_mixup_cutmix_compile():
    x, y = images(4), torch.eye(7)[:4]
    both = lambda k, a, b: (*mixup(k, a, b, 0.5), *cutmix(k, a, b, 0.5))  # noqa: E731 - one graph, one compile
    for got, want in zip(torch.compile(both, fullgraph=True)(prng.key(1), x, y), both(prng.key(1), x, y)):
        torch.testing.assert_close(got, want)


def test_class_weights():
    labels = torch.tensor([0] * 6 + [1] * 2 + [3] * 4)
    w = class_weights(labels, 7)
    inv = torch.tensor([1 / 6, 1 / 2, 0, 1 / 4, 0, 0, 0])
    torch.testing.assert_close(w, inv * 3 / inv.sum())
    torch.testing.assert_close(w[w > 0].mean(), torch.tensor(1.0))
    # FER2013 Training counts: Disgust (436) weighs 16.5x Happy (7215)
    fer = torch.repeat_interleave(torch.arange(7), torch.tensor([3995, 436, 4097, 7215, 4830, 3171, 4965]))
    w = class_weights(fer)
    torch.testing.assert_close(w.mean(), torch.tensor(1.0))
    torch.testing.assert_close(w[1] / w[3], torch.tensor(7215 / 436))
