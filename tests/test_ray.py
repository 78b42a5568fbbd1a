"""``--ray``: a run's populations as Ray tasks on a real local Ray instance of 2 CPUs.

The reference is the same study run locally with the same ``--max-k`` split: Ray must change where
populations train, not what they compute. A worker killed mid-population (SIGKILL, as a lost node
or the OOM killer would) is retried by Ray from its last epoch checkpoint, and the study's numbers
are the uninterrupted run's. The populations run eagerly to stay in CI time: the worker runs the
same ``train_population`` as a local run, compiled or not.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (the dev extra has it)")

from fer_func import cli  # noqa: E402
from conftest import search_experiments_file, tiny_fer2013  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The lr study's 12 variants as 2 populations of 6, on a net small enough for CI.
STUDY = ["--study", "lr", "--profile", "cpu", "--epochs", "2", "--max-k", "6", "--device", "cpu", "--no-compile",
         "--wandb", "disabled", "--set", "model.knobs.channels=[8,16,16,16]", "--set", "model.knobs.fc=[32]"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_fer2013(tmp_path_factory.mktemp("data") / "fer2013.csv",
                        sizes=(("Training", 256), ("PublicTest", 64), ("PrivateTest", 64)))


def _run(argv, out) -> Path:
    assert cli.main([*argv, "--out", str(out)]) == 0
    (run_dir,) = [p for p in Path(out).iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, data):
    return _run([*STUDY, "--data", str(data)], tmp_path_factory.mktemp("local"))


def _numbers(run_dir: Path) -> dict:
    """Each variant's per-epoch metrics and final record, without wall-clock times."""
    res = json.loads((run_dir / "results.json").read_text())
    return {v["id"]: {"hparams": v["hparams"], "population": v["population"],
                      "epochs": [{k: x for k, x in e.items() if k != "epoch_s"} for e in v["epochs"]],
                      "final": v["final"], "diverged": v["diverged"]} for v in res["variants"]}


def _assert_same_numbers(a: Path, b: Path):
    na, nb = _numbers(a), _numbers(b)
    assert list(na) == list(nb)  # same variants, same order, same populations
    for vid in na:
        assert na[vid]["hparams"] == nb[vid]["hparams"] and na[vid]["population"] == nb[vid]["population"]
        assert len(na[vid]["epochs"]) == len(nb[vid]["epochs"]) == 2
        for ea, eb in zip(na[vid]["epochs"], nb[vid]["epochs"]):
            assert ea.keys() == eb.keys()
            for k in ea:
                assert ea[k] == pytest.approx(eb[k], rel=1e-5, abs=1e-6), (vid, k)
        fa, fb = na[vid]["final"], nb[vid]["final"]
        for k in ("train_acc", "val_acc", "test_acc", "gap"):
            assert fa[k] == pytest.approx(fb[k], rel=1e-5, abs=1e-6), (vid, k)
        assert (fa["best_epoch"], fa["confusion"]) == (fb["best_epoch"], fb["confusion"]), vid


def _table(run_dir: Path) -> list[str]:
    """summary.md's variant table and verdict lines with the timing column dropped."""
    lines = (run_dir / "summary.md").read_text().splitlines()
    rows = [ln for ln in lines if ln.startswith("| lr[") or ln.startswith("Best variant")]
    return ["|".join(c for i, c in enumerate(r.split("|")) if i != 7) for r in rows]


def test_a_two_population_study_on_ray_equals_the_local_run(local_ray, local_run, data, tmp_path):
    run_dir = _run([*STUDY, "--data", str(data), "--ray"], tmp_path)
    _assert_same_numbers(local_run, run_dir)
    assert _table(run_dir) == _table(local_run) and len(_table(run_dir)) == 13
    res = json.loads((run_dir / "results.json").read_text())
    assert [p["k"] for p in res["populations"]] == [6, 6]
    for p in res["populations"]:  # where each population ran, as the worker saw it
        assert p["placed_on"] == "cpu" and p["attempts"] == 1 and p["node"] and p["host"]
    assert res["ray"]["resources"] == {"num_cpus": 2}
    # the workers' checkpoints are in the run directory: --resume works with or without Ray
    assert sorted(f.name for f in (run_dir / "checkpoints").glob("population-*.pt")) == \
        ["population-0.pt", "population-1.pt"]


def test_a_worker_killed_mid_population_is_retried_from_its_checkpoint(local_ray, local_run, data, tmp_path):
    killed = {}

    def kill_after_first_epoch():
        ckpt = None
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            runs = [p for p in tmp_path.iterdir() if p.is_dir()] if tmp_path.exists() else []
            if runs:
                ckpt = runs[0] / "checkpoints" / "population-0.pt"
                where = runs[0] / "placement" / "population-0.json"
                if ckpt.exists() and where.exists():
                    pid = json.loads(where.read_text())["attempts"][-1]["pid"]
                    os.kill(pid, signal.SIGKILL)
                    killed["pid"] = pid
            time.sleep(0.02)

    killer = threading.Thread(target=kill_after_first_epoch, daemon=True)
    killer.start()
    run_dir = _run([*STUDY, "--data", str(data), "--ray"], tmp_path)
    killer.join(timeout=5)
    assert killed, "the population finished before its worker could be killed"
    res = json.loads((run_dir / "results.json").read_text())
    assert res["populations"][0]["attempts"] == 2 and res["populations"][1]["attempts"] == 1
    attempts = json.loads((run_dir / "placement" / "population-0.json").read_text())["attempts"]
    assert attempts[0]["pid"] == killed["pid"] != attempts[1]["pid"]
    _assert_same_numbers(local_run, run_dir)


def test_ctrl_c_on_the_driver_keeps_the_checkpoints_and_resume_continues_locally(local_run, data, tmp_path):
    """The driver in its own process with its own embedded Ray, as a user runs it."""
    out = tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "runner.py"), *STUDY, "--data", str(data), "--ray", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        ckpts = list(out.glob("*/checkpoints/population-*.pt")) if out.exists() else []
        if ckpts:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    (run_dir,) = list(out.iterdir())
    assert f"--resume {run_dir}" in err
    # stopped before the end: a checkpoint kept in the run directory, not every population finished
    kept = sorted(f.name for f in (run_dir / "checkpoints").glob("population-*.pt"))
    assert kept and not (run_dir / "summary.md").exists()
    assert cli.main(["--resume", str(run_dir), "--no-compile", "--wandb", "disabled"]) == 0  # locally this time
    _assert_same_numbers(local_run, run_dir)


def test_a_search_on_ray_runs_one_population_per_device_on_one_study_and_one_budget(local_ray, tmp_path):
    import optuna

    csv = tiny_fer2013(tmp_path / "fer2013.csv", (("Training", 128), ("PublicTest", 48), ("PrivateTest", 48)))
    out = tmp_path / "runs"
    argv = ["--search", "tiny", "--experiments", str(search_experiments_file(tmp_path)), "--trials", "7", "--k", "2",
            "--ray", "--ray-cpus-per-population", "1", "--profile", "full", "--no-compile", "--wandb", "disabled",
            "--data", str(csv), "--out", str(out)]
    assert cli.main(argv) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    res = json.loads((run_dir / "results.json").read_text())
    pops = res["populations"]
    assert len(pops) == 2 and res["k"] == 4  # 2 CPUs, 1 each: two populations of K=2 at once
    assert all(p["placed_on"] == "cpu" and p["attempts"] == 1 for p in pops)
    # one global budget: every trial number 0..6 trained exactly once, by one population or the other (a
    # population whose worker starts late may find the budget spent: it then trains none, without error)
    assert sorted(t["number"] for t in res["trials"]) == list(range(7))
    assert sum(p["trials"] for p in pops) == 7
    study = optuna.load_study(study_name=None, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(res["ray"]["storage"])))
    used = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL or t.number < 7]
    assert len(used) == 7 and all(t.number >= 7 for t in study.trials if t not in used)
    best = max(res["trials"], key=lambda t: t["best_val_acc"] or -1)
    assert res["best"]["trial"] == best["number"] and res["best"]["val_acc"] == best["best_val_acc"]
    assert 0 <= res["best"]["test_acc"] <= 1
    summary = (run_dir / "summary.md").read_text()
    assert "K=4" in summary and "trials: 7" in summary
    assert (run_dir / "plots" / "search_progress.png").is_file()


def test_a_search_population_that_finds_the_budget_spent_trains_nothing(tmp_path, capsys):
    """Locally a second search on the same storage is a user's mistake (one line naming --study-name, exit 2,
    no run directory); on Ray a population whose worker started after the others asked for every trial,
    which the merge keeps as a population with no trials."""
    from types import SimpleNamespace

    from fer_func.distributed.ray_search import merge

    csv = tiny_fer2013(tmp_path / "fer2013.csv", (("Training", 128), ("PublicTest", 48), ("PrivateTest", 48)))
    argv = ["--search", "tiny", "--experiments", str(search_experiments_file(tmp_path)), "--trials", "3", "--k", "2",
            "--storage", str(tmp_path / "study.journal"), "--profile", "full", "--no-compile", "--wandb", "disabled",
            "--data", str(csv)]
    assert cli.main([*argv, "--out", str(tmp_path / "first")]) == 0
    capsys.readouterr()
    assert cli.main([*argv, "--out", str(tmp_path / "second")]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("error: --study-name 'fer-func-tiny-tpe-s0': --storage ") and "(3 trials)" in err
    assert not (tmp_path / "second").exists() or not any((tmp_path / "second").iterdir())
    (run_dir,) = list((tmp_path / "first").iterdir())
    done = json.loads((run_dir / "results.json").read_text())
    placed = {"node": "n", "host": "h", "placed_on": "cpu", "gpu_ids": [], "attempts": 1}
    merged = merge([done, None], [placed, placed], [str(run_dir), None], SimpleNamespace(k=2, trials=3), 1.0)
    assert [p["trials"] for p in merged["populations"]] == [3, 0] and merged["k"] == 4
    assert sorted(t["number"] for t in merged["trials"]) == [0, 1, 2]
    assert merged["best"] == {**done["best"], "population": 0}


def _one_line_error(argv) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "runner.py"), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("address", ["127.0.0.1:9", "not-an-address"])
def test_a_bad_cluster_address_is_one_line_and_exit_2(address):
    line = _one_line_error(["--study", "lr", "--ray", address, "--wandb", "disabled"])
    assert f"--ray {address}" in line or f"--ray '{address}'" in line
    assert "ray start --head" in line


def test_ray_not_installed_is_one_line_with_the_install_command(tmp_path):
    # a module named ray that fails to import, first on the path: what a machine without Ray sees
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    proc = subprocess.run([sys.executable, str(ROOT / "runner.py"), "--study", "lr", "--ray", "--wandb", "disabled"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --ray: Ray is not installed here; pip install -e '.[ray]' (or pip install 'ray[default]')"]


def test_without_ray_the_run_never_imports_it(data, tmp_path):
    code = ("import sys; from fer_func import cli; "
            f"rc = cli.main({['--experiment', 'tiny_cnn', '--epochs', '1', '--max-k', '2', '--no-compile', '--wandb', 'disabled', '--data', str(data), '--out', str(tmp_path)]!r}); "
            "assert rc == 0; assert 'ray' not in sys.modules, 'ray was imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_max_k_splits_a_group_into_balanced_populations():
    from fer_func.study.experiments import split
    assert [len(g) for g in split([list(range(12))], 8)] == [6, 6]
    assert [len(g) for g in split([list(range(13)), list(range(3))], 4)] == [4, 3, 3, 3, 3]
    assert split([list(range(5))], None) == [list(range(5))]
    assert sum(split([list(range(7))], 3), []) == list(range(7))
