"""The compiled population carries the equivalence suite: every population feature, compiled, equals eager.

Each case trains a population compiled and eagerly, in float64, and compares everything a user sees:
every variant's carried state (params, BN state, optimizer and schedule state, counters, divergence),
every epoch's metrics, the best-epoch selection and ``finish()``'s test metrics, with assert_close's
float64 defaults. After the first step and the first evaluation compile, the rest of training runs
under ``torch.compiler.set_stance("fail_on_recompile")``: no epoch, evaluation or best-epoch copy may
recompile. Where a population equals its variants' solo runs (no BatchNorm in a batch-size population),
the compiled population is also compared with those solo runs.

Backend: ``aot_eager`` (dynamo's capture, functionalisation and AOTAutograd, the graph inductor is
given) for the feature cases, so CI can afford one per feature; one kitchen-sink population with most
features at once compiles with inductor itself, generated C++ included. Programs of equal structure
are shared between tests by the engine's program cache, so a case costs one compile at most.
"""
import copy

import pytest
import torch

from fer_func.config import AugmentConfig, ModelConfig, OptimizerConfig
from fer_func.population import Population

from conftest import BASE, OPTIMIZERS, SCHEDULES, SMALL_BN, mixed_variants, random_data, warm

F64 = torch.float64
EPOCHS = 2
AUG = AugmentConfig(enabled=True, rotation=10.0, flip=0.5, brightness=0.2, contrast=0.2)
MIX = AugmentConfig(enabled=True, rotation=0.0, flip=0.0, brightness=0.0, contrast=0.0, mixup=0.4, cutmix=1.0)
RESNET = ModelConfig("resnet", {"stem": 2, "stages": [2, 4], "blocks": 1})
DROPOUT = lambda conv, fc: ModelConfig("regularized_cnn", {"channels": [3, 4], "convs_per_block": 1, "fc": [8],
                                                           "dropout_conv": conv, "dropout_fc": fc})


def train_compiled(variants, data, compile="aot_eager", epochs=EPOCHS, stop_at=None):
    pop = Population(variants, data, dtype=F64, compile=compile)
    warm(pop)
    with torch.compiler.set_stance("fail_on_recompile"):
        if stop_at is not None:  # pause mid-epoch, checkpoint, resume in a new population (compiled program shared)
            steps = iter(range(10**6))
            assert pop.train_epoch(stop=lambda: next(steps) + 1 >= stop_at) is None
            sd = copy.deepcopy(pop.state_dict())
            pop = Population(variants, data, dtype=F64, compile=compile)
            pop.load_state_dict(sd)
        for _ in range(epochs - pop.epoch):
            pop.train_epoch()
        final = pop.finish()
    return pop, pop.history, final


def train_eager(variants, data, epochs=EPOCHS):
    pop = Population(variants, data, dtype=F64, compile=False)
    for _ in range(epochs):
        pop.train_epoch()
    return pop, pop.history, pop.finish()


def assert_same(a, b, members=None):
    """Two populations' runs (pop, history, final) agree: state, per-epoch metrics, best epoch, test metrics."""
    (pa, ha, fa), (pb, hb, fb) = a, b
    members = range(len(pa.variants)) if members is None else members
    for i, j in (members.items() if isinstance(members, dict) else zip(members, members)):
        ma, mb = pa.member(i), pb.member(j)
        for k in ("params", "model_state", "opt_state", "sched", "diverged", "step"):
            torch.testing.assert_close(ma[k], mb[k], msg=lambda m: f"member {i}, {k}: {m}")
        for ra, rb in zip(ha, hb):
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "diverged"):
                torch.testing.assert_close(torch.as_tensor(ra[key][i]), torch.as_tensor(rb[key][j]), equal_nan=True,
                                           msg=lambda m: f"member {i}, epoch {ra['epoch']}, {key}: {m}")
        for key in ("val_acc", "test_acc", "test_loss"):
            assert fa[i][key] == pytest.approx(fb[j][key], rel=1e-7, abs=1e-7, nan_ok=True), (i, key)
        for key in ("best_epoch", "diverged", "confusion"):
            assert fa[i][key] == fb[j][key], (i, key)


def assert_equals_solo_runs(compiled, variants, data):
    for i, v in enumerate(variants):
        assert_same(compiled, train_eager([v], data), members={i: 0})


CASES = {
    "batchnorm-regularized": [BASE.replace(model=SMALL_BN, optimizer=OPTIMIZERS[1], seed=s) for s in (0, 1)],
    "batchnorm-resnet": [BASE.replace(model=RESNET, optimizer=OPTIMIZERS[1], seed=s) for s in (0, 1)],
    "mixed-optimizers-and-schedules": mixed_variants(),
    "dropout-varies-augment-on-off": [BASE.replace(model=DROPOUT(0.1, 0.5), augment=AUG, seed=0),
                                      BASE.replace(model=DROPOUT(0.2, 0.3), seed=0),
                                      BASE.replace(model=DROPOUT(0.0, 0.5), augment=AUG, seed=1)],
    "mixup-cutmix": [BASE.replace(augment=MIX, seed=0), BASE.replace(seed=0), BASE.replace(augment=MIX, seed=1)],
    "class-weights": [BASE.replace(class_weighted=True), BASE.replace(class_weighted=False),
                      BASE.replace(class_weighted=True, optimizer=OPTIMIZERS[0])],
}


@pytest.fixture(scope="module")
def data():
    return random_data(n_train=96, n_eval=40)


@pytest.mark.parametrize("case", list(CASES))
def test_feature_compiled_equals_eager_and_solo_runs(case, data):
    variants = CASES[case]
    compiled = train_compiled(variants, data)
    assert_same(compiled, train_eager(variants, data))
    assert_equals_solo_runs(compiled, variants, data)


def test_batch_size_population_with_accumulation_compiled(data):
    """Batch sizes 16/32/48 share a micro-batch of 16 and accumulate; without BN each equals its solo run."""
    variants = [BASE.replace(batch_size=b, optimizer=OPTIMIZERS[1]) for b in (16, 32, 48)]
    compiled = train_compiled(variants, data)
    assert compiled[0].plan.accumulate
    assert_same(compiled, train_eager(variants, data))
    for i, v in enumerate(variants):  # a solo run of batch b micro-batches by 16 exactly like the population does
        solo = Population([v], data, dtype=F64, compile=False, micro_batch=16)
        for _ in range(EPOCHS):
            solo.train_epoch()
        assert_same(compiled, (solo, solo.history, solo.finish()), members={i: 0})


def test_batch_size_population_with_batchnorm_compiled_equals_eager(data):
    variants = [BASE.replace(model=SMALL_BN, batch_size=b, optimizer=OPTIMIZERS[1]) for b in (16, 32)]
    assert_same(train_compiled(variants, data), train_eager(variants, data))


def test_divergence_is_isolated_compiled(data):
    variants = [BASE.replace(optimizer=OPTIMIZERS[1]), BASE.replace(optimizer=OptimizerConfig("sgd", lr=1e12)),
                BASE.replace(optimizer=OPTIMIZERS[0])]
    compiled = train_compiled(variants, data)
    assert compiled[1][-1]["diverged"].tolist() == [False, True, False]
    assert_same(compiled, train_eager(variants, data))
    for i in (0, 2):  # the sane neighbours equal their solo runs: the blow-up never reached them
        assert_same(compiled, train_eager([variants[i]], data), members={i: 0})


def test_best_epoch_selection_compiled(data):
    variants = mixed_variants(SMALL_BN)
    compiled = train_compiled(variants, data, epochs=3)
    eager = train_eager(variants, data, epochs=3)
    assert compiled[0].best["epoch"].tolist() == eager[0].best["epoch"].tolist()
    for k in ("params", "model_state"):
        torch.testing.assert_close(compiled[0].best[k], eager[0].best[k])
    assert_same(compiled, eager)


def test_resume_mid_epoch_compiled_equals_uninterrupted(data):
    variants = mixed_variants(SMALL_BN)
    resumed = train_compiled(variants, data, stop_at=3)
    assert_same(resumed, train_eager(variants, data))


@pytest.mark.slow
def test_kitchen_sink_population_compiled_by_inductor_equals_eager(data):
    """BN, mixed optimizers and schedules, per-variant dropout, augmentation on/off and class weights,
    compiled by inductor (C++ code generation included) against eager, without recompiles."""
    variants = [BASE.replace(model=DROPOUT(0.1, 0.5), optimizer=o, schedule=s, seed=i % 2,
                             augment=AUG if i % 2 else AugmentConfig(enabled=False), class_weighted=i == 2)
                for i, (o, s) in enumerate(zip(OPTIMIZERS, SCHEDULES))]
    variants[3] = variants[3].replace(model=DROPOUT(0.2, 0.3))
    assert_same(train_compiled(variants, data, compile=True), train_eager(variants, data))
