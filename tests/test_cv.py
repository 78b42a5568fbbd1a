"""k-fold cross-validation as a population: stratified keyed folds that cover Training, no image both
trained on and validated on within a fold, per-variant validation on the fold, one compiled step."""
import numpy as np
import pytest
import torch

from fer_func import prng, tree
from fer_func.config import ModelConfig, OptimizerConfig, VariantConfig
from fer_func.data.folds import stratified_folds, train_and_val_indices
from fer_func.population import Population
from fer_func.population.step import MEAN, STD

from conftest import random_data, warm

F64 = torch.float64
NET = ModelConfig("regularized_cnn", {"channels": [3, 4], "convs_per_block": 1, "fc": [8], "dropout_conv": 0.1,
                                      "dropout_fc": 0.3})


def test_folds_are_stratified_disjoint_and_cover_training():
    labels = torch.randint(0, 7, (1003,), generator=torch.Generator().manual_seed(0))
    fold = stratified_folds(labels, 5, prng.key(3))
    assert torch.equal(fold, stratified_folds(labels, 5, prng.key(3)))  # keyed: same key, same folds
    sizes = torch.bincount(fold, minlength=5)
    assert int(sizes.sum()) == 1003 and int(sizes.max() - sizes.min()) <= 1
    for c in range(7):
        per_class = torch.bincount(fold[labels == c], minlength=5)
        assert int(per_class.max() - per_class.min()) <= 1, (c, per_class)
    seen = torch.zeros(1003, dtype=torch.int64)
    for train, val in train_and_val_indices(fold, 5):
        assert not set(train.tolist()) & set(val.tolist())
        assert len(train) + len(val) == 1003
        seen[val] += 1
    assert torch.all(seen == 1)  # every image validates in exactly one fold
    with pytest.raises(ValueError, match="k >= 2"):
        stratified_folds(labels, 1, prng.key(0))


def test_each_variant_trains_off_its_fold_and_validates_on_it_in_one_compiled_population():
    data = random_data(n_train=90, n_eval=12)
    variants = [VariantConfig(model=NET, optimizer=OptimizerConfig("adam", lr=3e-3), epochs=2, batch_size=16, cv=3,
                              fold=f, hparams={"fold": f}) for f in range(3)]
    pop = Population(variants, data, dtype=F64, compile="aot_eager")
    fold_of = pop.folds.fold_of.cpu()
    for e in range(2):
        order = pop.epoch_order(e)
        assert order.shape == (3, pop.plan.num_train)
        for i in range(3):
            row = order[i].cpu()
            assert len(set(row.tolist())) == row.numel()                # no image twice in an epoch
            assert not torch.any(fold_of[row] == i)                    # never an image of its own fold
    warm(pop)
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(2):
            record = pop.train_epoch()
    # Validation accuracy of each variant == by hand on its fold with the model's pure apply.
    x, y = data.images["train"], data.labels["train"]
    for i in range(3):
        idx = torch.nonzero(fold_of == i).flatten()
        params, state = tree.index(pop.carry["params"], i), tree.index(pop.carry["model_state"], i)
        xs = (x[idx].unsqueeze(1).to(F64) / 255.0 - MEAN) / STD
        logits, _ = pop.model.apply(params, state, xs, key=None, train=False)
        acc = float((logits.argmax(-1) == y[idx]).double().mean())
        assert record["val_acc"][i] == pytest.approx(acc, abs=1e-12)
    final = pop.finish()
    # finish() validates the best-epoch weights on each variant's fold too, and tests on PrivateTest.
    assert [f["val_acc"] for f in final] == pytest.approx(list(pop.best["val_acc"].cpu().numpy()), abs=1e-12)
    assert all(0 <= f["test_acc"] <= 1 for f in final) and np.all(np.isfinite(record["val_loss"]))
    with pytest.raises(ValueError, match="folds differ in size"):  # no (K, N, 7) array for unequal folds
        pop.evaluate("val", probs=True)
    finals, probs = pop.finish(with_probs=True)  # PrivateTest, shared by the folds: the cv ensemble's input
    assert finals == final and probs.shape == (3, 12, 7)
    np.testing.assert_allclose(probs.sum(-1), 1.0)


def test_cv_in_experiments_makes_one_variant_per_fold_and_seed():
    from fer_func.study import experiments
    from fer_func.study.options import DEFAULT_EXPERIMENTS
    catalog = experiments.load(DEFAULT_EXPERIMENTS, "cpu")
    vs = experiments.select(catalog, experiment="04", overrides=("cv=5",), seeds=2)
    assert [(v.fold, v.seed) for v in vs] == [(f, s) for f in range(5) for s in (0, 1)]
    assert len(experiments.populations(vs)) == 1
    from fer_func.config import ConfigError
    with pytest.raises(ConfigError, match="cv = 1"):
        experiments.select(catalog, experiment="04", overrides=("cv=1",))


def test_cv_run_reports_the_cv_mean_and_the_fold_ensemble(tmp_path, monkeypatch):
    import json
    from fer_func import cli
    from conftest import QUICK, TINY, tiny_fer2013

    monkeypatch.setenv("FER_FUNC_CACHE", str(tmp_path / "cache"))
    csv = tiny_fer2013(tmp_path / "fer2013.csv", (("Training", 120), ("PublicTest", 24), ("PrivateTest", 24)))
    path = tmp_path / "experiments.toml"
    path.write_text(TINY.split("[experiments.tiny.grid]")[0])
    out = tmp_path / "runs"
    assert cli.main(["--out", str(out), "--experiments", str(path), "--profile", "full", "--experiment", "tiny",
                     "--data", str(csv), "--cv", "3", *QUICK]) == 0
    (run_dir,) = list(out.iterdir())
    res = json.loads((run_dir / "results.json").read_text())
    assert sorted(v["hparams"]["fold"] for v in res["variants"]) == [0, 1, 2]
    (cv,) = [r for r in res["ensembles"] if r["kind"] == "folds"]
    assert len(cv["members"]) == 3 and cv["cv_val_acc"] == [v["final"]["val_acc"] for v in res["variants"]]
    assert "## Cross-validation" in (run_dir / "summary.md").read_text()
