"""``runner.py --search``: search spaces, Optuna trials refilling slots (pruned by Optuna's pruner),
--storage, PBT with its lineage, exact resume after Ctrl-C, and bad spaces rejected by name.

Small: a one-hidden-layer MLP on a 128/48/48-image FER2013-format CSV, eager float64, so "exact" means
torch.testing.assert_close's float64 defaults. The slot operations themselves are tested compiled,
under fail_on_recompile, in test_slots.py.
"""
import json
import re
import textwrap

import optuna
import pytest
import torch

from fer_func.search import run as search_run
from fer_func import cli

from conftest import SEARCH_EXPERIMENT, search_experiments_file, tiny_fer2013

SMALL = ["--profile", "full", "--no-compile", "--dtype", "float64", "--wandb", "disabled"]


@pytest.fixture(autouse=True)
def tiny_data(tmp_path, monkeypatch):
    """A FER2013-format CSV of 128/48/48 images: evaluation of the full synthetic splits would be most
    of these tests' time."""
    monkeypatch.setenv("FER_FUNC_CACHE", str(tmp_path / "cache"))
    csv = tiny_fer2013(tmp_path / "fer2013.csv", (("Training", 128), ("PublicTest", 48), ("PrivateTest", 48)))
    SMALL_DATA[:] = ["--data", str(csv)]


SMALL_DATA: list = []


def search(tmp_path, *args, out="runs"):
    code = cli.main(["--search", "tiny", "--experiments", str(search_experiments_file(tmp_path)), "--out",
                     str(tmp_path / out), *SMALL, *SMALL_DATA, *args])
    dirs = [p for p in (tmp_path / out).iterdir() if p.is_dir()] if (tmp_path / out).is_dir() else []
    return code, dirs[0] if dirs else None


def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_tpe_trials_refill_slots_until_the_budget_is_spent_and_storage_holds_them(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'study.db'}"
    code, run_dir = search(tmp_path, "--trials", "6", "--k", "2", "--storage", db, "--wandb", "offline")
    assert code == 0
    # The search's bar: trials ended of the budget, with done/pruned/running beside it.
    pruned = sum(t["state"] == "pruned" for t in results(run_dir)["trials"])
    assert re.search(rf"search tiny \(tpe\): 100%\|[^|]*\| 6/6 .*done 6, pruned {pruned}, running 0, best val",
                     capsys.readouterr().err)
    r = results(run_dir)
    trials = r["trials"]
    assert sorted(t["number"] for t in trials) == list(range(6))
    states = [t["state"] for t in trials]
    assert set(states) <= {"complete", "pruned", "diverged"} and "pruned" in states  # the pruner acted
    for t in trials:
        assert 1 <= len(t["epochs"]) <= 3 and (len(t["epochs"]) == 3) == (t["state"] == "complete")
        assert [e["epoch"] for e in t["epochs"]] == list(range(len(t["epochs"])))  # the trial's own epochs
        assert t["best_val_acc"] == pytest.approx(max(e["val_acc"] for e in t["epochs"]))
        assert set(t["params"]) == {"optimizer.lr", "model.knobs.dropout", "optimizer.name"}
    # Refills: 6 trials ran in 2 slots, and each slot's trials followed one another.
    for slot in (0, 1):
        mine = sorted((t for t in trials if t["slot"] == slot), key=lambda t: t["started_epoch"])
        for a, b in zip(mine, mine[1:]):
            assert b["started_epoch"] == a["started_epoch"] + len(a["epochs"])
    assert r["variant_epochs"] == sum(len(t["epochs"]) for t in trials)
    best = max(trials, key=lambda t: t["best_val_acc"])
    assert r["best"]["trial"] == best["number"] and 0 <= r["best"]["test_acc"] <= 1
    # The Optuna storage holds the same study: usable by optuna-dashboard or a second process.
    (name,) = optuna.study.get_all_study_names(db)
    stored = optuna.load_study(study_name=name, storage=db).trials
    assert [t.state.name.lower() for t in stored] == [
        {"diverged": "pruned"}.get(t["state"], t["state"]) for t in sorted(trials, key=lambda t: t["number"])]
    for t in stored:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value == pytest.approx(trials[t.number]["best_val_acc"])
    # Each trial's user attributes (optuna-dashboard shows them): slot, run directory, W&B run id, and
    # the PrivateTest accuracy of its best-epoch weights; the best trial's is the one the report gives.
    wandb_ids = {d.name.split("-", 3)[-1] for d in (run_dir / "wandb").glob("offline-run-*")}
    for t in stored:
        a = t.user_attrs
        assert a["slot"] == trials[t.number]["slot"] and a["run_dir"] == str(run_dir)
        assert a["wandb_run_id"] in wandb_ids and a["wandb_run_id"].endswith(f"-t{t.number}")
        assert a["test_acc"] == trials[t.number]["test_acc"] and (a["test_acc"] is None or 0 <= a["test_acc"] <= 1)
    assert stored[r["best"]["trial"]].user_attrs["test_acc"] == pytest.approx(r["best"]["test_acc"])
    # One W&B run per trial, and the report's files.
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 6
    assert (run_dir / "plots" / "search_progress.png").is_file()
    assert "| trial | configuration" in (run_dir / "summary.md").read_text()


class _CutAfter:
    """Stands in for the Ctrl-C flag: "pressed" after ``n`` polls (one per training step)."""

    def __init__(self, n):
        self.n, self.polls = n, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def set(self):
        self.polls += 1
        return self.polls > self.n


@pytest.mark.parametrize("method", ["tpe", "pbt"])
def test_resume_after_ctrl_c_continues_the_search_exactly(tmp_path, monkeypatch, method):
    args = ["--method", method, "--k", "3"] + (["--trials", "5"] if method != "pbt" else [])
    code, full = search(tmp_path, *args, out="full")
    assert code == 0
    # 128 images / batch 32 = 4 steps per epoch: cut mid-way through the third population epoch.
    monkeypatch.setattr(search_run, "StopFlag", lambda: _CutAfter(10))
    code, cut = search(tmp_path, *args, out="cut")
    assert code == 130
    monkeypatch.undo()
    assert cli.main(["--resume", str(cut)]) == 0
    a, b = results(full), results(cut)
    assert len(a["trials"]) == len(b["trials"])
    for ta, tb in zip(a["trials"], b["trials"]):
        assert ta["params"] == tb["params"] and ta.get("state") == tb.get("state")
        assert len(ta["epochs"]) == len(tb["epochs"])
        for ea, eb in zip(ta["epochs"], tb["epochs"]):
            for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                torch.testing.assert_close(ea[k], eb[k])
    assert a["best"]["trial"] == b["best"]["trial"]
    assert a["best"]["test_acc"] == pytest.approx(b["best"]["test_acc"])
    if method == "pbt":
        assert a["lineage"] == b["lineage"] and a["lineage"]  # exploits happened, identically


def test_pbt_records_lineage_and_traces_the_winners_schedule(tmp_path):
    code, run_dir = search(tmp_path, "--method", "pbt", "--k", "4")
    assert code == 0
    r = results(run_dir)
    assert len(r["trials"]) == 4 and r["slot_epochs"] == 4 * 3
    # Ready points after epochs 1 and 2 (interval 1; none after the last): the bottom quarter (1 of 4) each time.
    assert [e["epoch"] for e in r["lineage"]] == [1, 2]
    for e in r["lineage"]:
        assert e["from"] != e["slot"] and e["from_score"] >= e["score"]
        assert e["after"]["optimizer.name"] == e["before"]["optimizer.name"]  # a member keeps its rule
        assert e["after"] != e["before"]
    schedule = r["best"]["schedule"]
    assert [s["epoch"] for s in schedule] == [0, 1, 2]
    # The winner's values in its last epoch are its final values.
    assert {k: schedule[-1][k] for k in r["best"]["params"]} == r["best"]["params"]
    assert (run_dir / "plots" / "pbt_winner_schedule.png").is_file()
    assert (run_dir / "plots" / "pbt_population.png").is_file()
    assert "Lineage" in (run_dir / "summary.md").read_text()


@pytest.mark.parametrize("table, message", [
    ("optimizer.lr = { loguniform = [] }", "search.optimizer.lr.loguniform = []: empty"),
    ("optimizer.lr = { uniform = [0.1, 0.01] }", "low > high"),
    ("optimizer.lr = { uniform = [0.1, 0.1] }", "an empty range"),
    ("optimizer.lr = { loguniform = [0.0, 0.1] }", "a log range must stay above 0"),
    ("optimizer.lr = { normal = [0.0, 0.1] }", "unknown distribution 'normal'"),
    ("batch_size = { choice = [32, 64] }", "search.batch_size: cannot be searched"),
    ("model.knobs.hidden = { choice = [[16], [32]] }", "search.model.knobs.hidden: cannot be searched"),
    ("model.knobs.dropout = { uniform = [0.0, 1.5] }", "model.knobs.dropout = 1.5"),
    ("method = \"grid\"\noptimizer.lr = { uniform = [0.1, 0.2] }", "search.method = 'grid'"),
    ("pruner = \"mean\"\noptimizer.lr = { uniform = [0.1, 0.2] }",
     "search.pruner = 'mean': choose one of hyperband, successive_halving, median, none"),
    ("n_startup_trial = 3\noptimizer.lr = { uniform = [0.1, 0.2] }", "search.n_startup_trial: unknown search option"),
    ("n_startup_trials = -1\noptimizer.lr = { uniform = [0.1, 0.2] }", "search.n_startup_trials = -1: must be an integer >= 0"),
    ("median_warmup_epochs = 1.5\noptimizer.lr = { uniform = [0.1, 0.2] }", "search.median_warmup_epochs = 1.5"),
])
def test_bad_search_spaces_are_rejected_by_name(tmp_path, capsys, table, message):
    path = search_experiments_file(tmp_path, "[experiments.tiny.search]\n" + table + "\n")
    assert cli.main(["--search", "tiny", "--experiments", str(path), "--trials", "4", "--k", "2", *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.mark.parametrize("argv, message", [
    (["--study", "lr", "--trials", "4"], "--trials only apply to --search"),
    (["--search", "tiny", "--k", "2", "4"], "give one K"),
    (["--search", "tiny", "--trials", "2", "--k", "2"], "more trials than slots"),
    (["--search", "nope", "--trials", "4", "--k", "2"], "unknown experiment 'nope'"),
])
def test_search_command_line_mistakes(tmp_path, capsys, argv, message):
    assert cli.main([*argv, "--experiments", str(search_experiments_file(tmp_path)), *SMALL]) == 2
    assert message in capsys.readouterr().err


def test_an_experiment_without_a_search_table_says_how_to_add_one(tmp_path, capsys):
    path = tmp_path / "experiments.toml"
    path.write_text(SEARCH_EXPERIMENT.split("[experiments.tiny.search]")[0])
    assert cli.main(["--search", "tiny", "--experiments", str(path), "--trials", "4", "--k", "2", *SMALL]) == 2
    assert "has no [experiments.tiny.search] table" in capsys.readouterr().err


def test_median_pruner_and_tpe_startup_trials_come_from_the_search_table(tmp_path):
    from fer_func.study.options import RunOptions, SearchOptions
    table = ("[experiments.tiny.search]\npruner = \"median\"\nmedian_startup_trials = 2\nmedian_warmup_epochs = 1\n"
             "n_startup_trials = 4\noptimizer.lr = { loguniform = [1e-4, 1e-1] }\n")
    options = RunOptions(search=SearchOptions(name="tiny", trials=6, k=2), experiments=search_experiments_file(tmp_path, table),
                         profile="full")
    driver = search_run.make_driver(search_run.Setup(options), None, "median")  # None: an in-memory Optuna storage
    pruner, sampler = driver.study.pruner, driver.study.sampler
    assert isinstance(pruner, optuna.pruners.MedianPruner) and isinstance(sampler, optuna.samplers.TPESampler)
    assert (pruner._n_startup_trials, pruner._n_warmup_steps, sampler._n_startup_trials) == (2, 1, 4)


def test_a_study_name_the_storage_holds_is_refused_without_a_run_directory(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'search.db'}"
    optuna.create_study(storage=db, study_name="faces")  # another search's study
    code, run_dir = search(tmp_path, "--trials", "4", "--k", "2", "--storage", db, "--study-name", "faces")
    assert code == 2 and run_dir is None  # nothing left behind under --out
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --study-name 'faces': --storage ") and "--resume" in err
    assert cli.main(["--study", "lr", "--study-name", "x", *SMALL]) == 2
    assert "--study-name only apply to --search" in capsys.readouterr().err
