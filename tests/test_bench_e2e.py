"""``runner.py --bench --e2e``: both sides train the same variants, the JSON holds the table, errors are one line.

Small: a FER2013-format CSV of synthetic faces (256 train, 128 val, 128 test images), eager
(``--no-compile``). In float64 the population and the torch loop train the very same models
(same init, data order, augmentation draws, optimizer and schedule), so their accuracies agree
to the image; with dropout (torch's own in the loop) they agree only within noise.
"""
import json

import pytest
import torch

from fer_func.bench import torch_loop
from fer_func.bench.e2e import seed_noise
from fer_func.data.synthetic import generate
from fer_func.population import Population
from fer_func import cli
from fer_func.study import experiments
from fer_func.study.options import DEFAULT_EXPERIMENTS

OPTIMIZERS = ('grid.optimizer=[{name="sgd",lr=0.05,momentum=0.9,nesterov=true},{name="adam",lr=3e-3,weight_decay=1e-3},'
              '{name="rmsprop",lr=1e-3,centered=true,momentum=0.5},{name="adamw",lr=3e-3}]')


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    d = generate(seed=0, sizes=(256, 128, 128))
    rows = [f"{int(y)},{' '.join(map(str, x.flatten().tolist()))},{usage}"
            for split, usage in (("train", "Training"), ("val", "PublicTest"), ("test", "PrivateTest"))
            for x, y in zip(*d.split(split))]
    path = tmp_path_factory.mktemp("data") / "fer2013.csv"
    path.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    return path


def e2e(tmp_path, csv, *args):
    path = tmp_path / "e2e.json"
    assert cli.main(["--bench", "--data", str(csv), "--device", "cpu", "--no-compile", "--json", str(path), *args]) == 0
    return json.loads(path.read_text())


def test_population_and_loop_train_the_same_models(tmp_path, csv, capsys):
    # Every optimizer, a per-step cosine, augmentation with MixUp and CutMix, class weights; 2 epochs of 2 steps.
    doc = e2e(tmp_path, csv, "--e2e", "tiny_cnn", "--train-limit", "64", "--epochs", "2", "--dtype", "float64",
              "--set", "batch_size=32", "--set", OPTIMIZERS, "--set", 'schedule={name="cosine",unit="step"}',
              "--set", "class_weighted=true", "--set", 'augment={enabled=true,mixup=0.4,cutmix=1.0}')
    pop, loop = doc["rows"]
    assert (pop["impl"], loop["impl"]) == ("population", "loop") and doc["meta"]["variants"] == 4
    assert doc["speedup"] == pytest.approx(loop["wall_s"] / pop["wall_s"])
    assert doc["train_speedup"] == pytest.approx(loop["train_s"] / pop["train_s"])
    # --no-compile: the population compiles nothing, so it records no compile time (the first step is a step)
    assert pop["compile_s"] == 0 and loop["compile_s"] == 0 and pop["train_s"] <= pop["wall_s"]
    for r in (pop, loop):
        assert 0 < r["step_gmacs"] < 10 * doc["peak_gmacs"]  # no training step beats a big matmul by 10x
        assert r["efficiency"] == pytest.approx(r["step_gmacs"] / doc["peak_gmacs"])
        assert r["epoch_s"] > 0 and len(r["best_val"]) == len(r["test_acc"]) == 4
    assert pop["best_val"].keys() == loop["best_val"].keys()
    n_val = doc["meta"]["val_images"]
    for i in pop["best_val"]:  # float64: at most one image decided differently
        assert abs(pop["best_val"][i] - loop["best_val"][i]) <= 1 / n_val, i
        assert abs(pop["test_acc"][i] - loop["test_acc"][i]) <= 1 / n_val, i
    assert len(set(pop["best_val"].values())) > 1  # the optimizers moved the weights apart: not a trivial agreement
    acc = doc["accuracy"]
    assert acc["mean_abs_diff"] <= 1 / n_val and acc["within_noise"] and acc["noise_kind"].startswith("binomial")
    out = capsys.readouterr().out
    assert "speedup (loop wall / population wall)" in out and "GMAC/s" in out and "noise" in out


def test_a_study_with_dropout_and_seeds_reports_across_seed_noise(tmp_path, csv):
    doc = e2e(tmp_path, csv, "--e2e", "lr", "--train-limit", "128", "--epochs", "1", "--seeds", "2",
              "--set", "model.knobs.fc=[16]", "--set", "grid.optimizer.lr=[0.01]",
              "--set", 'grid.schedule.name=["plateau"]')
    pop, loop = doc["rows"]
    assert len(pop["best_val"]) == len(loop["best_val"]) == 2 and doc["meta"]["seeds"] == 2
    assert doc["meta"]["profile"] == "cpu" and doc["meta"]["train_images"] == 128
    assert doc["accuracy"]["noise_kind"].startswith("population's across-seed std")


def test_the_loop_starts_from_the_populations_weights():
    catalog = experiments.load(DEFAULT_EXPERIMENTS, "cpu")
    # BatchNorm buffers, mixed optimizers; a narrow head, since fer_func's eager init takes ~2 s for FC 256
    variants = experiments.select(catalog, study="optimizer", seeds=2, overrides=("model.knobs.fc=[16]",))
    pop = Population(variants, generate(seed=0, sizes=(64, 8, 8)), compile=False)
    model = pop.plan.model
    for i, v in enumerate(variants):
        member = pop.member(i)
        want = model.to_state_dict(member["params"], member["model_state"])
        got = torch_loop.initial_module(v, "cpu").state_dict()
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), (i, k)


def test_seed_noise_is_the_rms_of_per_configuration_stds():
    entry = lambda hp, acc: {"experiment": "lr", "hparams": hp, "final": {"val_acc": acc}}
    results = {"variants": [entry({"lr": 1}, 0.5), entry({"lr": 1}, 0.7), entry({"lr": 2}, 0.4), entry({"lr": 2}, 0.4)]}
    noise, kind = seed_noise(results, n_val=100)
    assert noise == pytest.approx(((0.2**2 / 2 + 0.0) / 2) ** 0.5) and "2 configurations" in kind


@pytest.mark.parametrize("args, message", [
    (["--e2e", "lr"], "error: --e2e only apply to --bench"),
    (["--bench", "--e2e", "nope"], "error: --e2e 'nope': no such study or experiment; choose one of mlp, "),
    (["--bench", "--e2e", "lr", "--k", "4"], "error: --k cannot be combined with --e2e"),
])
def test_mistakes_are_one_line(args, message, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
