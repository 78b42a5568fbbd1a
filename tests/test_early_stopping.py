"""Early stopping: a variant that stops freezes exactly like a diverged one (masked updates, its best
epoch kept), equals a solo run trained up to its stopping epoch, and the population ends once
every variant has stopped. Compiled (aot_eager) under fail_on_recompile, float64."""
import pytest
import torch

from fer_func.config import EarlyStoppingConfig, ModelConfig, OptimizerConfig, VariantConfig
from fer_func.population import Population

from conftest import random_data, warm

F64 = torch.float64
NET = ModelConfig("regularized_cnn", {"channels": [3, 4], "convs_per_block": 1, "fc": [8], "dropout_conv": 0.1,
                                      "dropout_fc": 0.3})


def variant(lr, patience=0, min_delta=0.0, epochs=5):
    return VariantConfig(model=NET, optimizer=OptimizerConfig("adam", lr=lr), epochs=epochs, batch_size=16,
                         early_stopping=EarlyStoppingConfig(patience, min_delta), hparams={"lr": lr})


@pytest.fixture(scope="module")
def data():
    return random_data(n_train=64, n_eval=24)


def test_a_stopped_variant_is_frozen_at_its_stopping_epoch_like_a_solo_run_that_ends_there(data):
    # min_delta 1.0 is a gain no accuracy can make after the first epoch (which gains over "no best
    # yet"): the variant stops after exactly `patience` more epochs, at epoch index 2.
    stopper, runner = variant(3e-3, patience=2, min_delta=1.0), variant(1e-3)
    pop = Population([stopper, runner], data, dtype=F64, compile="aot_eager")
    warm(pop)
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(5):
            pop.train_epoch()
        final = pop.finish()
    assert list(pop.stopped_epoch) == [2, -1] and final[0]["stopped_epoch"] == 2 and final[1]["stopped_epoch"] is None
    assert [bool(r["stopped"][0]) for r in pop.history] == [False, False, True, True, True]
    assert not pop.all_stopped and not final[0]["diverged"]

    solo = Population([variant(3e-3, epochs=5)], data, dtype=F64, compile=False)
    for _ in range(3):  # a solo run that simply ends after the stopping epoch
        solo.train_epoch()
    torch.testing.assert_close(pop.member(0), solo.member(0))
    assert final[0]["best_epoch"] == int(solo.best["epoch"][0])
    torch.testing.assert_close(pop.best["params"]["classifier.out.weight"][0], solo.best["params"]["classifier.out.weight"][0])
    # The other variant trained on, unaffected: equal to its own solo run of 5 epochs.
    other = Population([runner], data, dtype=F64, compile=False)
    for _ in range(5):
        other.train_epoch()
    torch.testing.assert_close(pop.member(1), other.member(0))


def test_the_population_ends_when_every_variant_has_stopped_and_resume_keeps_the_counters(data):
    pop = Population([variant(3e-3, 1, 1.0), variant(1e-3, 2, 1.0)], data, dtype=F64, compile=False)
    pop.train_epoch()
    pop.train_epoch()
    assert not pop.all_stopped and list(pop.since_gain) == [1, 1] and list(pop.stopped_epoch) == [1, -1]
    sd = pop.state_dict()
    again = Population([variant(3e-3, 1, 1.0), variant(1e-3, 2, 1.0)], data, dtype=F64, compile=False)
    again.load_state_dict(sd)
    assert list(again.stopped_epoch) == [1, -1] and list(again.since_gain) == [1, 1]
    again.train_epoch()
    assert again.all_stopped and list(again.stopped_epoch) == [1, 2]


def test_a_diverged_variant_is_not_reported_as_stopped(data):
    exploding = VariantConfig(model=NET, optimizer=OptimizerConfig("sgd", lr=1e12), epochs=3, batch_size=16,
                              early_stopping=EarlyStoppingConfig(1, 1.0), hparams={"lr": 1e12})
    pop = Population([exploding, variant(1e-3, 1, 1.0, epochs=3)], data, dtype=F64, compile=False)
    for _ in range(3):
        pop.train_epoch()
    assert bool(pop.carry["diverged"][0]) and pop.stopped_epoch[0] == -1 and pop.stopped_epoch[1] == 1
    assert pop.all_stopped


def test_early_stopping_values_are_checked_by_name():
    from fer_func.config import ConfigError
    with pytest.raises(ConfigError, match="early_stopping.patience = -1"):
        EarlyStoppingConfig(patience=-1)
    with pytest.raises(ConfigError, match="early_stopping.min_delta = -0.1"):
        EarlyStoppingConfig(min_delta=-0.1)
