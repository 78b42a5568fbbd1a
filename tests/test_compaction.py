"""Compaction (population/compaction.py): once variants have ended, the population computes the live
ones only, and every number stays what the whole population computes. Float64, eager and compiled."""
import numpy as np
import pytest
import torch

from fer_func import tree
from fer_func.config import EarlyStoppingConfig, ModelConfig, OptimizerConfig, VariantConfig
from fer_func.population import Population
from fer_func.population.compaction import worth_it
from fer_func.study.train import achieved_gmacs

from conftest import random_data

F64 = torch.float64
NET = ModelConfig("regularized_cnn", {"channels": [3, 4], "convs_per_block": 1, "fc": [8], "dropout_conv": 0.1,
                                      "dropout_fc": 0.3})
EPOCHS = 4


def variants():
    def v(opt, patience=0, min_delta=0.0, seed=0):
        return VariantConfig(model=NET, optimizer=opt, epochs=EPOCHS, batch_size=16, seed=seed,
                             early_stopping=EarlyStoppingConfig(patience, min_delta), hparams={"lr": opt.lr})
    # 0 stops after epoch index 1 (min_delta 1.0: no gain counts after the first epoch), 1 diverges in
    # its first epoch, 2 and 3 train all four epochs.
    return [v(OptimizerConfig("adam", lr=3e-3), patience=1, min_delta=1.0), v(OptimizerConfig("sgd", lr=1e12)),
            v(OptimizerConfig("adam", lr=1e-3), seed=1), v(OptimizerConfig("rmsprop", lr=1e-3), seed=2)]


def run(data, compact, compile):
    pop = Population(variants(), data, dtype=F64, compile=compile)
    sizes = []
    for _ in range(EPOCHS):
        pop.train_epoch()
        if compact:
            pop.compact()
        sizes.append(len(pop.live))
    return pop, sizes


@pytest.fixture(scope="module")
def data():
    return random_data(n_train=64, n_eval=24)


@pytest.mark.parametrize("compile", [False, "aot_eager"], ids=["eager", "compiled"])
def test_a_compacted_population_computes_the_same_numbers_bit_for_bit(data, compile):
    whole, sizes_whole = run(data, False, compile)
    compacted, sizes = run(data, True, compile)
    assert sizes_whole == [4, 4, 4, 4] and sizes == [3, 2, 2, 2]  # the diverged one goes first, then the stopped one
    assert list(compacted.stopped_epoch) == [1, -1, -1, -1] and list(compacted.diverged()) == [False, True, False, False]
    # Each record says the K its epoch computed: the compacted population's steps cost fewer variants.
    assert [r["k"] for r in whole.history] == [4, 4, 4, 4] and [r["k"] for r in compacted.history] == [4, 3, 2, 2]
    assert achieved_gmacs(compacted) > 0 and achieved_gmacs(whole) > 0
    for a, b in zip(whole.history, compacted.history):  # every record, the parked variants' rows included
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "diverged", "stopped"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for i in range(4):  # live and parked members alike
        for x, y in zip(tree.leaves(whole.member(i)), tree.leaves(compacted.member(i))):
            assert torch.equal(x, y) or (x.isnan().any() and torch.equal(x.nan_to_num(), y.nan_to_num())), i
    for key in ("val_acc", "epoch"):
        assert torch.equal(whole.best[key], compacted.best[key])
    for x, y in zip(tree.leaves(whole.best["params"]), tree.leaves(compacted.best["params"])):
        assert torch.equal(x, y)
    fa, fb = whole.finish(), compacted.finish()
    assert fa == fb


def test_a_compacted_population_resumes_from_its_checkpoint(data):
    pop, _ = run(data, True, False)
    sd = pop.state_dict()
    again = Population(variants(), data, dtype=F64, compile=False)
    again.load_state_dict(sd)
    assert list(again.live) == [2, 3] and sorted(again._parked) == [0, 1]
    assert again.finish() == pop.finish()


def test_slots_cannot_change_in_a_compacted_population(data):
    pop, _ = run(data, True, False)
    with pytest.raises(RuntimeError, match="compacted to 2 of 4 variants"):
        pop.copy_slots([0, 0, 2, 3])


def test_compaction_pays_only_when_the_saved_steps_outweigh_a_compile():
    assert worth_it(k=57, live=39, epoch_s=900, epochs_left=10, compile_s=180)
    assert not worth_it(k=57, live=56, epoch_s=900, epochs_left=2, compile_s=180)  # 32 s saved vs 360 s
    assert not worth_it(k=4, live=4, epoch_s=10, epochs_left=10, compile_s=1)  # nothing ended
    assert not worth_it(k=4, live=0, epoch_s=10, epochs_left=10, compile_s=1)  # nothing left to run
