"""Slot operations (fer_func/population/slots.py) on a compiled population: a search's refills and
PBT's exploit/explore change which model a slot holds, exactly, without recompiling.

Float64 and dynamo's ``aot_eager`` backend (the graph inductor would get), as in
test_compiled_equivalence.py; after the first step and evaluation compile, everything runs under
``torch.compiler.set_stance("fail_on_recompile")``.
"""
import pytest
import torch

from fer_func import tree
from fer_func.config import ModelConfig, OptimizerConfig, ScheduleConfig, VariantConfig
from fer_func.population import Population

from conftest import random_data, warm

F64 = torch.float64
NET = lambda conv, fc: ModelConfig("regularized_cnn", {"channels": [3, 4], "convs_per_block": 1, "fc": [8],
                                                       "dropout_conv": conv, "dropout_fc": fc})
V = lambda opt, lr, conv=0.1, fc=0.3, sched="cosine", seed=0: VariantConfig(
    model=NET(conv, fc), optimizer=OptimizerConfig(opt, lr=lr), schedule=ScheduleConfig(sched), epochs=3,
    batch_size=16, seed=seed, hparams={"lr": lr, "opt": opt, "conv": conv})
# What a search may put in a slot later: both optimizer rules, dropout rates that differ.
ROOM = [V("adam", 1e-3, 0.0, 0.2), V("sgd", 1e-2, 0.3, 0.5)]


@pytest.fixture(scope="module")
def data():
    return random_data(n_train=64, n_eval=24)


def carried(pop, i):
    """Slot i's state as a solo run holds it (the active rule's optimizer state)."""
    return pop.member(i)


def test_a_refilled_slot_trains_exactly_like_a_solo_run_and_nothing_recompiles(data):
    first = [V("adam", 3e-3, seed=0), V("sgd", 2e-2, seed=1)]
    newcomer = V("sgd", 5e-3, conv=0.25, fc=0.4, sched="cosine", seed=7)
    pop = Population(first, data, dtype=F64, compile="aot_eager", room=ROOM)
    warm(pop)
    with torch.compiler.set_stance("fail_on_recompile"):
        pop.train_epoch()
        pop.assign(0, newcomer)            # epoch 1: slot 0 starts a new trial
        assert pop.slot_epoch(0) == 0 and pop.slot_epoch(1) == 1
        assert float(pop.best["val_acc"][0]) == -1.0 and int(pop.best["epoch"][0]) == -1
        for _ in range(3):
            pop.train_epoch()
        final = pop.finish()
    solo = Population([newcomer], data, dtype=F64, compile=False, room=ROOM + first)
    for _ in range(3):
        solo.train_epoch()
    solo_final = solo.finish()
    torch.testing.assert_close(carried(pop, 0), carried(solo, 0))
    for e in range(3):  # the trial's epochs are population epochs 1..3
        for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            torch.testing.assert_close(float(pop.history[e + 1][k][0]), float(solo.history[e][k][0]))
    assert final[0]["best_epoch"] == solo_final[0]["best_epoch"]  # counted in the trial's own epochs
    for k in ("val_acc", "test_acc", "train_acc"):
        assert final[0][k] == pytest.approx(solo_final[0][k], abs=1e-12)


def test_exploit_copies_the_winner_and_explore_changes_only_hyperparameters(data):
    pop = Population([V("adam", 3e-3, seed=0), V("adam", 1e-3, seed=1), V("sgd", 2e-2, seed=2)], data, dtype=F64,
                     compile="aot_eager", room=ROOM)
    warm(pop)
    with torch.compiler.set_stance("fail_on_recompile"):
        pop.train_epoch()
        before = tree.clone(pop.carry)
        best_before = tree.clone(pop.best)
        pop.copy_slots([1, 1, 2])  # slot 0 exploits slot 1
        torch.testing.assert_close(tree.index(pop.carry, 0), tree.index(before, 1), rtol=0, atol=0)
        torch.testing.assert_close(tree.index(pop.best, 0), tree.index(best_before, 1), rtol=0, atol=0)
        torch.testing.assert_close(tree.index(pop.carry, 2), tree.index(before, 2), rtol=0, atol=0)
        assert pop.variants[0] is pop.variants[1]

        explored = V("adam", 1.2e-3, conv=0.3, fc=0.5, seed=1)
        pop.set_hparams(0, explored)
        after = tree.index(pop.carry, 0)
        # Weights, BN statistics, Adam's moments and step counts, schedule position: the winner's.
        for part in ("params", "model_state", "step", "noise_key"):
            torch.testing.assert_close(after[part], tree.index(before, 1)[part], rtol=0, atol=0)
        torch.testing.assert_close(after["opt_state"]["buffers"], tree.index(before, 1)["opt_state"]["buffers"],
                                   rtol=0, atol=0)
        assert int(after["sched"]["t"]) == int(tree.index(before, 1)["sched"]["t"])
        # Hyperparameters: the explored ones (cosine at the same position, from the new base rate).
        assert float(pop.carry["sched"]["base_lr"][0]) == pytest.approx(1.2e-3)
        assert float(pop.carry["sched"]["lr"][0]) == pytest.approx(
            float(before["sched"]["lr"][1]) * 1.2, rel=1e-12)
        assert float(pop.hp["dropout"]["dropout_conv"][0]) == pytest.approx(0.3)
        with pytest.raises(ValueError, match="keeps its rule"):
            pop.set_hparams(0, V("sgd", 1e-2, seed=1))
        pop.freeze(2)
        frozen = tree.clone(tree.index(pop.carry, 2))
        pop.train_epoch()
        pop.train_epoch()
    frozen_after = tree.index(pop.carry, 2)
    for part in ("params", "model_state", "opt_state", "step"):
        torch.testing.assert_close(frozen_after[part], frozen[part], rtol=0, atol=0)
    assert not torch.equal(pop.carry["params"]["classifier.out.weight"][0], before["params"]["classifier.out.weight"][1])


def test_a_slot_refuses_what_its_compiled_structure_cannot_hold(data):
    pop = Population([V("adam", 3e-3), V("adam", 1e-3)], data, dtype=F64, compile=False)
    with pytest.raises(ValueError, match="optimizer rule"):
        pop.assign(0, V("sgd", 1e-2))
    with pytest.raises(ValueError, match="room"):
        pop.assign(0, V("adam", 1e-3, conv=0.35))  # a dropout rate the population compiled as a constant
