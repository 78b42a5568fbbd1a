"""experiments.toml loading: the shipped file, grid expansion, overrides, errors, populations, config.toml."""
from pathlib import Path

import pytest

from fer_func.config import ConfigError, VariantConfig
from fer_func.study import experiments as ex
from fer_func.study import resolved
from fer_func.study.options import RunOptions

ROOT = Path(__file__).resolve().parents[1]

BASE = """
[experiments.demo]
id = "01"
description = "a small test experiment"
model = { name = "mlp", knobs = { hidden = [32], dropout = 0.1 } }
optimizer = { name = "adam", lr = 1e-3 }
schedule = { name = "constant" }
augment = { enabled = false }
batch_size = 8
epochs = 2
seed = 5
"""


def write(tmp_path, text):
    path = tmp_path / "experiments.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def catalog():
    return ex.load(ROOT / "experiments.toml")


def test_shipped_file_has_the_study(catalog):
    assert [(e.id, e.name) for e in catalog.values()] == [
        ("01", "mlp"), ("02", "simple_cnn"), ("03", "large_cnn"), ("04", "regularized_cnn"), ("05", "augmented_cnn"),
        ("06", "resnet"), ("07", "tiny_cnn"), ("08", "lr"), ("09", "optimizer"), ("10", "batch_size"), ("11", "best")]
    sizes = {n: len(e.variants()) for n, e in catalog.items()}
    assert sizes == {"mlp": 1, "simple_cnn": 1, "large_cnn": 1, "regularized_cnn": 1, "augmented_cnn": 1, "resnet": 1,
                     "tiny_cnn": 1, "lr": 12, "optimizer": 4, "batch_size": 5, "best": 1}
    [mlp], [reg], [aug], [best] = (catalog[n].variants() for n in ("mlp", "regularized_cnn", "augmented_cnn", "best"))
    assert mlp.model.knobs["hidden"] == [512, 256, 128]
    assert catalog["large_cnn"].variants()[0].model.knobs["channels"] == [64, 128, 256, 512, 512]
    assert (reg.model.knobs["dropout_conv"], reg.model.knobs["dropout_fc"], reg.optimizer.weight_decay) == (0.2, 0.5, 1e-3)
    assert not reg.augment.enabled
    assert aug.model == reg.model and aug.optimizer == reg.optimizer
    assert (aug.augment.enabled, aug.augment.rotation, aug.augment.flip, aug.augment.brightness, aug.augment.contrast) \
        == (True, 10.0, 0.5, 0.2, 0.2)
    assert best.model == reg.model and best.augment == aug.augment
    assert (best.optimizer.name, best.optimizer.lr, best.schedule.name, best.batch_size) == ("adam", 1e-3, "cosine", 64)


def test_study_grids(catalog):
    lr = catalog["lr"].variants()
    assert sorted({(v.optimizer.lr, v.schedule.name) for v in lr}) == sorted(
        (a, b) for a in (0.1, 0.01, 0.001, 0.0001) for b in ("constant", "cosine", "plateau"))
    assert lr[0].hparams == {"optimizer.lr": 0.1, "schedule.name": "constant"}
    assert ex.variant_id(lr[4]) == "lr[lr=0.01,schedule=cosine]-s0"
    opt = {v.optimizer.name: v.optimizer for v in catalog["optimizer"].variants()}
    assert set(opt) == {"sgd", "adam", "rmsprop", "adamw"}
    assert (opt["sgd"].momentum, opt["rmsprop"].momentum, opt["adam"].momentum) == (0.9, 0.0, 0.0)
    # 05's coupled weight decay for SGD, Adam and RMSprop; AdamW's decoupled decay at torch's default
    assert opt["adamw"].weight_decay == 1e-2 and opt["adam"].weight_decay == opt["sgd"].weight_decay == 1e-3
    bs = catalog["batch_size"].variants()
    assert [v.batch_size for v in bs] == [16, 32, 64, 128, 256]
    assert [ex.variant_id(v) for v in bs][0] == "batch_size[batch_size=16]-s0"
    # A study is one population: its variants differ only in the grid values.
    for name in ("lr", "optimizer", "batch_size"):
        assert len(ex.populations(catalog[name].variants())) == 1


def test_all_groups_variants_into_populations(catalog):
    vs = ex.select(catalog, all=True)
    pops = ex.populations(vs)
    # 04, 05, 08, 09 and 11 share model, epochs, augmentation settings (switched on or off per variant)
    # and batch size: one population. The batch-size study is its own (its micro-batch is gcd 16).
    assert [sorted({v.experiment for v in p}) for p in pops] == [
        ["mlp"], ["simple_cnn"], ["large_cnn"], ["augmented_cnn", "best", "lr", "optimizer", "regularized_cnn"],
        ["resnet"], ["tiny_cnn"], ["batch_size"]]
    assert [len(p) for p in pops] == [1, 1, 1, 1 + 1 + 12 + 4 + 1, 1, 1, 5]
    assert len({ex.variant_id(v) for v in vs}) == len(vs) == 7 + 12 + 4 + 5 + 1
    # Batch size keeps a variant out of another's population unless its own study varies it.
    solo = ex.select(catalog, experiment="04", overrides=("batch_size=32",))
    assert len(ex.populations(vs[:1] + solo + [v for v in vs if v.experiment == "augmented_cnn"])) == 3


def test_populations_satisfy_the_engine_plan(catalog):
    plan = pytest.importorskip("fer_func.population.plan")
    for pop in ex.populations(ex.select(catalog, all=True)):
        plan.make_plan(pop, num_train=28709)  # raises ConfigError if the group cannot train together


def test_find_and_select(catalog):
    assert ex.find(catalog, "04").name == ex.find(catalog, "4").name == "regularized_cnn"
    assert ex.find(catalog, "lr", study=True).id == "08"
    with pytest.raises(ConfigError, match=r"unknown study 'mlp'; choose one of lr, optimizer, batch_size"):
        ex.find(catalog, "mlp", study=True)
    with pytest.raises(ConfigError, match="exactly one"):
        ex.select(catalog, experiment="04", study="lr")


def test_seeds_replicate(tmp_path):
    vs = ex.load(write(tmp_path, BASE))["demo"].variants(seeds=3)
    assert [v.seed for v in vs] == [5, 6, 7]
    assert [v.replace(seed=0) for v in vs] == [vs[0].replace(seed=0)] * 3
    assert [ex.variant_id(v) for v in vs] == ["demo-s5", "demo-s6", "demo-s7"]


def test_overrides(tmp_path):
    exp = ex.load(write(tmp_path, BASE))["demo"]
    [v] = exp.variants(("optimizer.lr=0.01", "epochs=3", "batch_size=32", "model.knobs.hidden=[256,128]",
                        "optimizer.name=sgd", 'schedule.name="cosine"'))
    assert (v.optimizer.lr, v.epochs, v.batch_size, v.model.knobs["hidden"]) == (0.01, 3, 32, [256, 128])
    assert (v.optimizer.name, v.schedule.name, v.model.knobs["dropout"]) == ("sgd", "cosine", 0.1)
    grid = exp.variants(("grid.optimizer.lr=[0.1, 0.01]",))
    assert [(v.optimizer.lr, v.hparams) for v in grid] == [(0.1, {"optimizer.lr": 0.1}), (0.01, {"optimizer.lr": 0.01})]
    assert exp.variants() == [exp.variants()[0]]  # overrides never leak into the stored experiment


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=-0.1", "experiment 'demo' (01): optimizer.lr = -0.1: the learning rate must be > 0"),
    ("optimizer.lr=abc", "experiment 'demo' (01): optimizer.lr = 'abc': expected a number, got str"),
    ("optimizer.lr", "--set 'optimizer.lr': expected KEY=VALUE"),
    ("optimizer.betas=[0.9]", "optimizer.betas: unknown key; valid keys: name, lr,"),
    ("model.knobs.dropout=1.0", "model.knobs.dropout = 1.0: a dropout rate must be a number in [0, 1)"),
    ("batch_size=0", "batch_size = 0: must be a positive integer"),
    ("epochs=2.5", "epochs = 2.5: expected int, got float"),
    ("augment.enabled=1", "augment.enabled = 1: expected bool, got int"),
    ("optimizer.name=lion", "optimizer.name = 'lion': unknown optimizer; choose one of sgd, adam, adamw, rmsprop"),
    ("schedule.name=onecycle", "schedule.name = 'onecycle': unknown schedule; choose one of constant, cosine, step, plateau"),
    ("model.name=vit", "model.name = 'vit': unknown model; choose one of mlp, simple_cnn"),
    ("grid.seed=3", "grid.seed = 3: must be a non-empty list of values"),
])
def test_override_errors(tmp_path, override, message):
    exp = ex.load(write(tmp_path, BASE))["demo"]
    with pytest.raises(ConfigError) as e:
        exp.variants(("epochs=3", override))
    # The file is fine; the message names the --set that broke it, not experiments.toml.
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith("--set ") and "experiments.toml" not in str(e.value), str(e.value)


@pytest.mark.parametrize("edit, message", [
    (("epochs = 2", "epochs = 2\nwarmup = 3"), "experiment 'demo' (01): unknown key 'warmup'; valid keys:"),
    (("epochs = 2\n", ""), "experiment 'demo' (01): missing key 'epochs'; every experiment states it explicitly"),
    (("lr = 1e-3", 'lr = "1e-3"'), "optimizer.lr = '1e-3': expected a number, got str"),
    (("lr = 1e-3", "lr = 0.0"), "optimizer.lr = 0.0: the learning rate must be > 0"),
    (('"mlp"', '"mpl"'), "model.name = 'mpl': unknown model; choose one of mlp, simple_cnn, large_cnn"),
    (('name = "constant"', 'name = "linear"'), "schedule.name = 'linear': unknown schedule; choose one of constant"),
    (("dropout = 0.1", "dropout = -0.1"), "model.knobs.dropout = -0.1: a dropout rate must be a number in [0, 1)"),
    (("seed = 5", "seed = 5\n[experiments.demo.grid]\noptimizer.lr = [0.1, -1.0]"),
     "experiment 'demo' (01), grid optimizer.lr=-1.0: optimizer.lr = -1.0: the learning rate must be > 0"),
    (("seed = 5", "seed = 5\n[experiments.demo.grid]\nbatch_size = [8, 8]"), "grid.batch_size = [8, 8]: repeated values"),
    (("[experiments.demo]", "[experiment.demo]"), "unknown top-level key(s) ['experiment']"),
    (("epochs = 2", "epochs = "), "invalid TOML"),
])
def test_file_errors(tmp_path, edit, message):
    with pytest.raises(ConfigError) as e:
        ex.load(write(tmp_path, BASE.replace(*edit)))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="experiments file not found"):
        ex.load(tmp_path / "nope.toml")


def test_set_on_a_grid_axis_is_refused(catalog):
    with pytest.raises(ConfigError, match=r"--set optimizer.lr=0.5 is overwritten by the grid; .* --set grid.optimizer.lr="):
        catalog["lr"].variants(("optimizer.lr=0.5",))
    with pytest.raises(ConfigError, match=r"--set optimizer.lr=0.5 is overwritten by the grid; .* --set grid.optimizer="):
        catalog["optimizer"].variants(("optimizer.lr=0.5",))
    # a key the grid's tables never set is fine
    assert {v.optimizer.beta2 for v in catalog["optimizer"].variants(("optimizer.beta2=0.99",))} == {0.99}


def test_check_dataset(catalog):
    vs = catalog["batch_size"].variants()
    ex.check_dataset(vs, 256)
    with pytest.raises(ConfigError, match=r"experiment 'batch_size' \(batch_size\[batch_size=256\]-s0\): batch_size = 256: "
                                          r"larger than the training set \(255 images\)"):
        ex.check_dataset(vs, 255)


def test_resolved_config_round_trip(tmp_path, catalog):
    vs = ex.select(catalog, all=True, seeds=2)
    resolved.dump(tmp_path / "config.toml", vs)
    back = resolved.load(tmp_path)
    assert back == vs and all(isinstance(v, VariantConfig) for v in back)
    # plan(options) reads it back for --resume
    assert ex.plan(RunOptions(resume=tmp_path)) == vs
    text = (tmp_path / "config.toml").read_text().replace('id = "mlp-s0"', 'id = "mlp-s9"')
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"variant 0: id = 'mlp-s9' does not match its settings \('mlp-s0'\)"):
        resolved.load(tmp_path)


def test_plan_applies_epochs_and_seeds():
    vs = ex.plan(RunOptions(study="optimizer", epochs=1, seeds=2, overrides=("optimizer.beta2=0.99",)))
    assert len(vs) == 8 and {v.epochs for v in vs} == {1} and {v.optimizer.beta2 for v in vs} == {0.99}
