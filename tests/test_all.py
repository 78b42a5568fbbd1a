"""``runner.py --all`` end to end: every experiment of experiments.toml in one process, then docs/results.md.

A tiny FER2013-format CSV (the real ``emotion,pixels,Usage`` layout) keeps it fast: 256 training
images, 64 each for PublicTest and PrivateTest, one epoch, two seeds, eager (the compiled path of
many populations in one process is tests/test_many_populations.py). Profiles and experiment-scoped
``--set`` are checked on the shipped file itself.
"""
import json

import pytest

from fer_func import cli
from fer_func.study import experiments, results
from fer_func.study.options import DEFAULT_EXPERIMENTS

from conftest import tiny_fer2013

NAMES = ["mlp", "simple_cnn", "large_cnn", "regularized_cnn", "augmented_cnn", "resnet", "tiny_cnn", "lr",
         "optimizer", "batch_size", "best"]


@pytest.mark.slow
def test_all_runs_every_experiment_end_to_end_and_the_results_page_reads_it(tmp_path, capsys):
    data = tiny_fer2013(tmp_path / "fer2013.csv")
    out = tmp_path / "runs"
    argv = ["--all", "--profile", "cpu", "--seeds", "2", "--epochs", "1", "--data", str(data), "--device", "cpu",
            "--no-compile", "--wandb", "disabled", "--out", str(out)]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("profile: cpu")
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["profile"] == "cpu" and 'profile = "cpu"' in (run_dir / "config.toml").read_text()
    assert sorted({v["experiment"] for v in res["variants"]}) == sorted(NAMES)
    assert len(res["variants"]) == 2 * (7 + 12 + 4 + 5 + 1)
    assert all(v["final"] is not None and len(v["epochs"]) == 1 for v in res["variants"])
    # 04/05/08/09/11 share model, epochs and batch size: one population; 10 is its own.
    assert len(res["populations"]) == 7
    assert all(p["wall_s"] > 0 for p in res["populations"])

    page = tmp_path / "results.md"
    assert results.main([str(run_dir), "--out", str(page)]) == 0
    text = page.read_text()
    for name in NAMES:
        assert name in text


def test_profiles_resize_without_changing_contrasts():
    full = experiments.load(DEFAULT_EXPERIMENTS, "full")
    cpu = experiments.load(DEFAULT_EXPERIMENTS, "cpu")
    quick = experiments.load(DEFAULT_EXPERIMENTS, "quick")
    assert list(full) == list(cpu) == list(quick) == NAMES
    one = lambda cat, name: cat[name].variants()[0]
    # the original study's widths at full size
    assert one(full, "simple_cnn").model.knobs["channels"] == [32, 64]
    assert one(full, "large_cnn").model.knobs["channels"] == [64, 128, 256, 512, 512]
    for cat in (full, cpu, quick):
        # 05 differs from 04 only by augmentation; 08-11 run on 05's model
        a, b = one(cat, "regularized_cnn"), one(cat, "augmented_cnn")
        assert a.replace(experiment="x", augment=b.augment) == b.replace(experiment="x")
        for study in ("lr", "optimizer", "batch_size", "best"):
            assert one(cat, study).model == b.model
        # 07 stays the smallest in compute, 03 has more parameters than 04
        from fer_func.models import build_from
        macs = {n: build_from(one(cat, n).model).macs for n in NAMES}
        assert min(macs, key=macs.get) == "tiny_cnn"
        # 03 (five unregularized conv layers, FC 1024-512) has 2.8x 04's parameters at full size, 3.8x at cpu widths
        assert build_from(one(cat, "large_cnn").model).param_count > 2.5 * build_from(a.model).param_count
    # cpu trains on the whole split to its plateau (early stopping in every experiment); quick is a smoke run
    assert experiments.profile_of(DEFAULT_EXPERIMENTS, "cpu").train_limit is None
    assert all(one(cpu, n).early_stopping.patience >= 3 for n in NAMES)
    assert experiments.profile_of(DEFAULT_EXPERIMENTS, "quick").train_limit == 4000
    # 03 is five conv layers (one per block) in both narrowed profiles: ten plain layers never leave the majority class
    assert one(cpu, "large_cnn").model.knobs["convs_per_block"] == one(quick, "large_cnn").model.knobs["convs_per_block"] == 1


def test_set_can_address_one_experiment_under_all():
    cat = experiments.load(DEFAULT_EXPERIMENTS, "cpu")
    vs = experiments.select(cat, all=True, overrides=("lr:model.knobs.channels=[4,8,8,8]", "08:epochs=2"))
    by = {}
    for v in vs:
        by.setdefault(v.experiment, v)
    assert by["lr"].model.knobs["channels"] == [4, 8, 8, 8] and by["lr"].epochs == 2
    assert by["optimizer"].model.knobs["channels"] == [8, 16, 32, 64] and by["optimizer"].epochs == 30


@pytest.mark.parametrize("argv, message", [
    (["--all", "--profile", "gpu"], "--profile 'gpu': experiments.toml has no such profile; choose one of full, cpu, quick"),
    (["--all", "--set", "nosuch:epochs=2"], "unknown experiment 'nosuch'"),
])
def test_profile_and_scoped_set_mistakes_are_one_line(argv, message, capsys):
    assert cli.main(argv + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_list_shows_each_profile_with_parameters_and_estimates(capsys):
    assert cli.main(["--list", "--seeds", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "profile full" in out and "profile cpu (default here)" in out
    assert "87 variants in 7 populations" in out
    assert "1.35M" in out  # the MLP's parameters, the same in both profiles
