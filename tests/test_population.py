"""The population engine: K variants in one vmapped step equal K solo runs, and solo runs equal torch.nn + torch.optim.

Everything runs in float64 on tiny random data, so "equal" means torch.testing.assert_close's float64
defaults (rtol 1e-7, atol 1e-7) after whole epochs of training, and "bit-identical" means torch.equal.
"""
import copy

import numpy as np
import pytest
import torch

from fer_func import tree
from fer_func.config import AugmentConfig, ModelConfig, OptimizerConfig, ScheduleConfig, VariantConfig
from fer_func.population import Population
from fer_func.population.step import MEAN, STD

from conftest import BASE, OPTIMIZERS, SMALL_BN, SMALL_CNN, mixed_variants, random_data

F64 = torch.float64


def train(variants, data, epochs=2, **kw):
    pop = Population(variants, data, dtype=F64, compile=kw.pop("compile", False), **kw)
    records = [pop.train_epoch() for _ in range(epochs)]
    return pop, records


STATE = ("params", "model_state", "opt_state", "sched", "metrics", "diverged", "step")


def assert_same_member(pop, i, solo, j=0, exact=False, keys=STATE):
    a, b = pop.member(i), solo.member(j)
    for k in keys:
        if exact:
            assert all(torch.equal(x, y) for x, y in zip(tree.leaves(a[k]), tree.leaves(b[k]))), k
        else:
            torch.testing.assert_close(a[k], b[k], msg=lambda m: f"{k}: {m}")


def test_population_equals_separate_solo_runs():
    data = random_data()
    variants = mixed_variants()
    pop, records = train(variants, data)
    for i, v in enumerate(variants):
        # A solo run is a population of one: no select() over other rules, no neighbours.
        solo, solo_records = train([v], data)
        assert_same_member(pop, i, solo)
        for r, s in zip(records, solo_records):
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                torch.testing.assert_close(torch.as_tensor(r[key][i]), torch.as_tensor(s[key][0]))


def test_vmap_equals_loop_bit_for_bit_structure_and_values():
    data = random_data()
    variants = mixed_variants(SMALL_BN)
    vm, _ = train(variants, data, mode="vmap")
    lp, _ = train(variants, data, mode="loop")
    for i in range(len(variants)):
        assert_same_member(vm, i, lp, i)


def _reference_run(v: VariantConfig, pop: Population, data, epochs: int):
    """torch.nn reference module + torch.optim + lr_scheduler on the population's own data order."""
    model = pop.model
    module = model.reference().to(F64)
    init_pop = Population([v], data, dtype=F64, compile=False)
    module.load_state_dict(model.to_state_dict(*(tree.index(init_pop.carry[k], 0) for k in ("params", "model_state"))))
    o = v.optimizer
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=o.lr, momentum=o.momentum, dampening=o.dampening,
                                            nesterov=o.nesterov, weight_decay=o.weight_decay),
           "adam": lambda p: torch.optim.Adam(p, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay),
           "adamw": lambda p: torch.optim.AdamW(p, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay),
           "rmsprop": lambda p: torch.optim.RMSprop(p, lr=o.lr, alpha=o.alpha, eps=o.eps, weight_decay=o.weight_decay,
                                                    momentum=o.momentum, centered=o.centered)}[o.name](module.parameters())
    x_all, y_all = data.split("train")
    n_batches = len(y_all) // v.batch_size
    for epoch in range(epochs):
        order = init_pop.epoch_order(epoch)[0]
        module.train()
        for b in range(n_batches):
            idx = order[b * v.batch_size:(b + 1) * v.batch_size]
            x = (x_all[idx].unsqueeze(1).to(F64) / 255.0 - MEAN) / STD
            loss = torch.nn.functional.cross_entropy(module(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return module, opt


@pytest.mark.parametrize("opt_index", range(4))
def test_solo_functional_run_equals_torch_nn_and_torch_optim(opt_index):
    data = random_data()
    v = BASE.replace(model=SMALL_BN, optimizer=OPTIMIZERS[opt_index], seed=3)
    pop, _ = train([v], data)
    module, opt = _reference_run(v, pop, data, epochs=2)
    params, state = pop.model.from_state_dict(module.state_dict())
    member = pop.member(0)
    torch.testing.assert_close(member["params"], params)
    torch.testing.assert_close(member["model_state"], state)  # BN running stats and num_batches_tracked


def test_batch_size_population_equals_solo_runs_without_bn():
    data = random_data(n_train=100)
    variants = [BASE.replace(batch_size=b, optimizer=OPTIMIZERS[1]) for b in (8, 16, 32)]
    pop, _ = train(variants, data)
    assert pop.plan.micro_batch == 8 and pop.plan.accumulate
    # Epochs: floor(100/8)*1=12, floor(100/16)*2=12, floor(100/32)*4=12 micro-steps -- no waste here.
    for i, v in enumerate(variants):
        solo, _ = train([v], data)          # micro-batch = its own batch size: no accumulation at all
        assert solo.plan.micro_batch == v.batch_size
        # "step" counts micro-steps (it keys the dropout/augmentation streams), so it differs by design.
        assert_same_member(pop, i, solo, keys=tuple(k for k in STATE if k != "step"))
        module, _ = _reference_run(v, pop, data, epochs=2)
        torch.testing.assert_close(pop.member(i)["params"], pop.model.from_state_dict(module.state_dict())[0])


def test_batch_size_population_with_bn_is_ghost_batch_norm_over_micro_batches():
    data = random_data(n_train=100)
    variants = [BASE.replace(model=SMALL_BN, batch_size=b) for b in (8, 32)]
    pop, _ = train(variants, data)
    # With BatchNorm, a variant of batch 32 normalises each 8-sample micro-batch by its own statistics
    # (ghost batch norm, running stats updated per micro-batch): exactly a solo run with micro_batch=8.
    ghost, _ = train([variants[1]], data, micro_batch=8)
    assert_same_member(pop, 1, ghost)
    # ... and it is not the same as true batch norm over all 32 samples.
    plain, _ = train([variants[1]], data)
    assert not torch.allclose(pop.member(1)["params"]["classifier.out.weight"],
                              plain.member(0)["params"]["classifier.out.weight"])


def test_waste_of_the_batch_size_study_is_small():
    from fer_func.population import make_plan
    variants = [BASE.replace(batch_size=b) for b in (16, 32, 64, 128, 256)]
    plan = make_plan(variants, 28709)
    assert plan.micro_batch == 16 and plan.steps_per_epoch == 1794
    assert plan.active_steps == (1794, 1794, 1792, 1792, 1792)
    assert plan.waste < 0.001


def test_diverging_variant_is_isolated_bit_for_bit():
    data = random_data()
    sane = [BASE.replace(optimizer=OPTIMIZERS[1]), BASE.replace(optimizer=OPTIMIZERS[0])]
    wild = BASE.replace(optimizer=OptimizerConfig("sgd", lr=1e12))
    calm = BASE.replace(optimizer=OptimizerConfig("sgd", lr=1e-3))
    with_wild, rec = train([sane[0], wild, sane[1]], data)
    with_calm, _ = train([sane[0], calm, sane[1]], data)
    assert rec[-1]["diverged"].tolist() == [False, True, False]
    wild_member = with_wild.member(1)
    assert wild_member["diverged_step"] >= 0
    assert all(torch.isfinite(x).all() for x in tree.leaves(wild_member["params"]))  # frozen before the blow-up
    for i in (0, 2):
        assert_same_member(with_wild, i, with_calm, i, exact=True)
    # Frozen: a further epoch changes nothing of the diverged variant but its step counter.
    with_wild.train_epoch()
    later = with_wild.member(1)
    for k in ("params", "model_state", "opt_state", "sched", "diverged_step"):
        assert all(torch.equal(x, y) for x, y in zip(tree.leaves(wild_member[k]), tree.leaves(later[k]))), k


def test_same_seed_shares_data_order_and_init_different_seed_does_not():
    data = random_data()
    variants = [BASE.replace(seed=0), BASE.replace(seed=0, optimizer=OPTIMIZERS[0]), BASE.replace(seed=1)]
    pop = Population(variants, data, dtype=F64, compile=False)
    order = pop.epoch_order(0)
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])
    assert not torch.equal(order[0], pop.epoch_order(1)[0])
    p = pop.carry["params"]["features.0.conv1.weight"]
    assert torch.equal(p[0], p[1]) and not torch.equal(p[0], p[2])


def test_best_epoch_params_are_kept_and_finish_reports_metrics():
    data = random_data()
    pop, records = train(mixed_variants(), data, epochs=3)
    val = torch.tensor(np.array([r["val_acc"] for r in records]))  # (epochs, K)
    best_epoch = val.argmax(0)  # first maximum, as the engine only replaces on strict improvement
    assert pop.best["epoch"].tolist() == best_epoch.tolist()
    final = pop.finish()
    # finish() takes the best networks' validation accuracy from the epoch that kept them instead of
    # evaluating them again: exactly what evaluating them again gives.
    again = pop.evaluate("val", pop.best["params"], pop.best["model_state"])["acc"]
    for i, f in enumerate(final):
        torch.testing.assert_close(f["val_acc"], float(val[best_epoch[i], i]))
        assert f["val_acc"] == float(again[i])
        assert sum(map(sum, f["confusion"])) == 40
        assert len(f["per_class"]["f1"]) == 7


def test_finish_evaluates_a_slot_that_never_kept_a_network():
    data = random_data()
    pop, _ = train(mixed_variants(), data, epochs=1)
    pop.assign(1, mixed_variants()[1])  # a fresh slot: no best network yet (val_acc -1) until its first epoch
    final = pop.finish()
    again = pop.evaluate("val", pop.best["params"], pop.best["model_state"])["acc"]
    assert [f["val_acc"] for f in final] == [float(a) for a in again]


def test_checkpoint_resume_equals_uninterrupted():
    data = random_data()
    variants = mixed_variants(SMALL_BN)
    full, _ = train(variants, data, epochs=2)
    first, _ = train(variants, data, epochs=1)
    sd = copy.deepcopy(first.state_dict())
    resumed = Population(variants, data, dtype=F64, compile=False)
    resumed.load_state_dict(sd)
    resumed.train_epoch()
    for i in range(len(variants)):
        assert_same_member(full, i, resumed, i, exact=True)


def test_resume_between_accumulated_micro_batches():
    # Paused after 3 micro-steps, the batch-32 variant holds 3 micro-batches' gradients in its accumulator.
    data = random_data(n_train=100)
    variants = [BASE.replace(batch_size=b, optimizer=OPTIMIZERS[1]) for b in (8, 32)]
    full, _ = train(variants, data, epochs=1)
    paused = Population(variants, data, dtype=F64, compile=False)
    steps = iter(range(10**6))
    assert paused.train_epoch(stop=lambda: next(steps) + 1 >= 3) is None
    sd = copy.deepcopy(paused.state_dict())
    assert set(sd["carry"]["grad_acc"]) == {"flat"} and sd["carry"]["grad_acc"]["flat"].abs().sum() > 0
    resumed = Population(variants, data, dtype=F64, compile=False)
    resumed.load_state_dict(sd)
    resumed.train_epoch()
    for i in range(len(variants)):
        assert_same_member(full, i, resumed, i, exact=True)


def test_augmentation_switches_per_variant_and_compiled_equals_eager_without_recompiles():
    data = random_data(n_train=64)
    aug = AugmentConfig(enabled=True)
    variants = [BASE.replace(augment=aug, optimizer=OPTIMIZERS[1]), BASE.replace(optimizer=OPTIMIZERS[1]),
                BASE.replace(augment=aug, optimizer=OPTIMIZERS[1], seed=1)]
    eager, eager_rec = train(variants, data)
    compiled, comp_rec = train(variants, data, compile=True, epochs=1)
    # After the first compile, nothing may recompile: not a new epoch, not a new grid of values.
    with torch.compiler.set_stance("fail_on_recompile"):
        comp_rec.append(compiled.train_epoch())
        other = [v.replace(optimizer=OptimizerConfig("adam", lr=1e-2 * (i + 1)), seed=5 + i) for i, v in enumerate(variants)]
        again, _ = train(other, data, compile=True, epochs=1)
    for i in range(len(variants)):
        assert_same_member(eager, i, compiled, i)
    # The non-augmented variant differs from the augmented one with the same seed.
    w = "features.0.conv1.weight"
    assert not torch.allclose(eager.member(0)["params"][w], eager.member(1)["params"][w])


def test_mixup_and_cutmix_train_only_the_variants_that_augment():
    data = random_data(n_train=64)
    aug = AugmentConfig(enabled=True, rotation=0.0, flip=0.0, brightness=0.0, contrast=0.0, mixup=0.4, cutmix=1.0)
    on, off = BASE.replace(augment=aug), BASE.replace(augment=AugmentConfig(enabled=False))
    pop, records = train([on, off], data, epochs=1)
    plain, _ = train([off], data, epochs=1)
    assert_same_member(pop, 1, plain)  # the non-augmenting neighbour is untouched by the mixing
    assert not torch.allclose(pop.member(0)["params"]["classifier.out.weight"],
                              pop.member(1)["params"]["classifier.out.weight"])
    assert all(torch.isfinite(x).all() for x in tree.leaves(pop.member(0)["params"]))


def test_class_weights_average_one_over_samples_and_favour_rare_classes():
    from fer_func.population import sample_mean_class_weights
    labels = torch.tensor([0] * 90 + [1] * 10)
    w = sample_mean_class_weights(labels)
    torch.testing.assert_close(w[labels].mean(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(w[1] / w[0], torch.tensor(9.0, dtype=torch.float64))


def test_dropout_rates_vary_as_tensors_only_when_they_differ():
    data = random_data(n_train=64)
    knobs = dict(SMALL_BN.knobs)
    rates = [(0.1, 0.5), (0.3, 0.0)]
    variants = [BASE.replace(model=ModelConfig("regularized_cnn", {**knobs, "dropout_conv": c, "dropout_fc": f}))
                for c, f in rates]
    pop, _ = train(variants, data, epochs=1)
    assert pop.plan.varying_dropout == ("dropout_conv", "dropout_fc")
    for i, v in enumerate(variants):
        solo, _ = train([v], data, epochs=1)   # a solo run keeps its rates as static floats
        assert solo.plan.varying_dropout == ()
        assert_same_member(pop, i, solo)
    same = [v.replace(optimizer=o) for v, o in zip([variants[0]] * 2, OPTIMIZERS)]
    assert Population(same, data, dtype=F64, compile=False).plan.varying_dropout == ()


def test_plateau_watches_val_accuracy_in_max_mode_and_val_loss_in_min_mode():
    """A population's plateau variants follow torch's ReduceLROnPlateau fed the metric their mode names.

    Before the fix every variant was fed validation accuracy, so ``mode="min"`` cut the rate while
    accuracy improved. Here each variant's lr after every epoch equals torch's scheduler stepped with
    the validation accuracy (max) or the validation loss (min) the population itself recorded.
    """
    data = random_data()
    scheds = [ScheduleConfig("plateau", mode="max", patience=0, threshold=0.0, factor=0.5),
              ScheduleConfig("plateau", mode="min", patience=0, threshold=0.0, factor=0.5)]
    variants = [BASE.replace(optimizer=OptimizerConfig("sgd", lr=0.2), schedule=s) for s in scheds]
    pop, records = train(variants, data, epochs=5)
    for i, s in enumerate(scheds):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
        ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=s.mode, factor=0.5, patience=0, threshold=0.0)
        lrs = []
        for r in records:
            ref.step(float(r["val_acc"][i] if s.mode == "max" else r["val_loss"][i]))
            lrs.append(opt.param_groups[0]["lr"])
        got = [float(r["lr"][i]) for r in records[1:]] + [float(pop.carry["sched"]["lr"][i])]
        assert got == pytest.approx(lrs, rel=1e-12), s.mode


def test_noise_streams_follow_the_variants_own_micro_steps_in_a_batch_size_population():
    """Dropout and augmentation are keyed by the variant's own micro-step count, not the population's.

    Batch 40 on 100 images trains 10 micro-steps of 8 per epoch while batch 8 trains 12; the batch-40
    variant idles 2 micro-steps an epoch. Before the fix those idle steps advanced its noise counter,
    so from epoch 2 on it drew other masks than a solo run with the same micro-batch.
    """
    data = random_data(n_train=100)
    model = ModelConfig("regularized_cnn", {"channels": [3, 4], "convs_per_block": 1, "fc": [8],
                                            "dropout_conv": 0.1, "dropout_fc": 0.3})
    variants = [BASE.replace(model=model, batch_size=b, augment=AugmentConfig(enabled=True), epochs=3)
                for b in (8, 40)]
    pop, _ = train(variants, data, epochs=3)
    assert pop.plan.active_steps == (12, 10)
    solo, _ = train([variants[1]], data, epochs=3, micro_batch=8)
    assert_same_member(pop, 1, solo)  # "step" included: it counts the variant's own micro-steps


def test_an_overflowing_update_never_becomes_the_best_or_the_reported_model():
    """The last update of an epoch overflows (loss and gradients were finite, so the step commits it):
    the epoch-end check marks the variant diverged, its best stays finite, finish() reports finite numbers,
    and its neighbour is untouched."""
    data = random_data()
    variants = [BASE.replace(seed=0), BASE.replace(seed=1)]
    pop = Population(variants, data, dtype=F64, compile=False)
    clean = Population(variants, data, dtype=F64, compile=False)
    pop.train_epoch(), clean.train_epoch()
    best_before = tree.clone(tree.index(pop.best["params"], 1))
    for p in (pop, clean):
        for j in range(p.plan.steps_per_epoch):
            p.step(p.epoch_order(1), p._js[j])
    name = next(iter(pop.carry["params"]))
    pop.carry["params"][name][1].view(-1)[0] = float("inf")  # what an overflowing last update leaves
    record = pop._end_epoch(0.0)
    clean._end_epoch(0.0)
    assert record["diverged"].tolist() == [False, True]
    assert int(pop.best["epoch"][1]) == 0
    for a, b in zip(tree.leaves(tree.index(pop.best["params"], 1)), tree.leaves(best_before)):
        assert torch.equal(a, b)
    final = pop.finish()
    assert final[1]["diverged"] and np.isfinite(final[1]["test_loss"]) and final[1]["best_epoch"] == 0
    assert final[0] == clean.finish()[0]


def test_first_epoch_step_time_leaves_the_compile_out():
    """``timing["step_s"]`` is the steady-state step: after a one-epoch run it must not spread the
    first step's compilation over the epoch (it did: the check ran after the epoch counter moved)."""
    pop, (rec,) = train([BASE.replace(epochs=1)], random_data(n_train=128), epochs=1, compile="aot_eager")
    steps = pop.plan.steps_per_epoch
    assert pop.timing["compile_s"] > 0 and steps > 1
    assert pop.timing["step_s"] == pytest.approx((rec["epoch_s"] - pop.timing["compile_s"]) / (steps - 1))


@pytest.mark.parametrize("model", [SMALL_CNN, SMALL_BN, ModelConfig("resnet", {"stem": 4, "stages": [4, 8], "blocks": 1}),
                                   ModelConfig("mlp", {"hidden": [16]})], ids=lambda m: m.name)
def test_vectorized_init_equals_one_variant_at_a_time(model):
    """Accelerators draw all K initial models in one vmapped init; it must be the per-variant init, bit for bit."""
    pop = Population([BASE.replace(model=model, seed=s) for s in (0, 1, 7)], random_data(n_train=32), compile=False)
    for (p1, s1), (p2, s2) in zip(pop._init_models(vectorized=True), pop._init_models(vectorized=False)):
        assert all(torch.equal(a, b) for a, b in zip(tree.leaves((p1, s1)), tree.leaves((p2, s2))))
        assert tree.leaves(p1)


@pytest.mark.parametrize("batch_sizes", [(16, 16, 16, 16), (16, 32, 16, 32)], ids=["plain", "accumulating"])
def test_flat_and_per_tensor_optimizer_layouts_train_the_same_numbers(batch_sizes, monkeypatch):
    """optim.flat.layout picks one flat buffer or the per-tensor tree for the step's optimizer part by
    the model's tensor count; the choice is about speed only. Every rule, schedule and (with mixed batch
    sizes) the flat gradient accumulator, trained both ways: the same numbers."""
    from fer_func.optim import flat
    data = random_data()
    variants = [v.replace(batch_size=b) for v, b in zip(mixed_variants(), batch_sizes)]
    runs = {}
    for name, threshold in (("flat", 1), ("per_tensor", 10**6)):
        monkeypatch.setattr(flat, "MIN_FLAT_TENSORS", threshold)
        runs[name], _ = train(variants, data, micro_batch=16)
        chosen = flat.layout(runs[name].member(0)["params"])
        assert isinstance(chosen, flat.Ravel if name == "flat" else flat.PerTensor), name
    for i in range(len(variants)):
        assert_same_member(runs["flat"], i, runs["per_tensor"], i)


def test_evaluation_chunks_split_the_data_evenly_and_change_no_result():
    from fer_func.population.evaluate import even_chunk
    # FER2013's 3,589 validation images: 8 chunks of 456 (3,648 evaluated) instead of 8 of 512 (4,096).
    assert even_chunk([3589, 3589]) == 456 and 8 * 456 >= 3589
    assert even_chunk([40]) == 40 and even_chunk([512]) == 512 and even_chunk([513]) == 264
    assert even_chunk([28709]) == 504 and -(-28709 // 504) == -(-28709 // 512)  # never more chunks
    data = random_data(n_eval=45)
    pop, _ = train(mixed_variants(), data, epochs=1)
    assert pop.eval_chunk_size == 48  # one chunk of 48 (45 rounded up to a multiple of 8), not one of 512
    chunked = Population(mixed_variants(), data, dtype=F64, compile=False, eval_chunk=16)  # 3 chunks
    for split in ("val", "test"):
        a = pop.evaluate(split)
        b = chunked.evaluate(split, pop.carry["params"], pop.carry["model_state"])
        assert np.array_equal(a["confusion"], b["confusion"]) and np.array_equal(a["acc"], b["acc"])
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-12)
