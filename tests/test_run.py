"""runner.py end to end: the run directory, W&B offline runs, CLI-level equivalence, and resume after Ctrl-C.

Small and exact: the synthetic default data limited to 256 training images, a narrow simple_cnn,
eager float64 (--dtype float64), so "the same metrics" means torch.testing.assert_close defaults.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fer_func import cli

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--set", "model.knobs.channels=[4,8]", "--set", "model.knobs.fc=[16]", "--train-limit", "256",
         "--no-compile", "--dtype", "float64"]


def grid(lrs, schedules):
    return ["--set", f"grid.optimizer.lr={lrs}", "--set", f"grid.schedule.name={json.dumps(schedules)}"]


def run_cli(tmp_path, *args) -> Path:
    out = tmp_path / "runs"
    assert cli.main(["--experiment", "08", "--out", str(out), *SMALL, *args]) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def variants_by_id(run_dir):
    return {v["id"]: v for v in json.loads((run_dir / "results.json").read_text())["variants"]}


def assert_same_epochs(a, b):
    assert len(a["epochs"]) == len(b["epochs"])
    for ea, eb in zip(a["epochs"], b["epochs"]):
        for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            torch.testing.assert_close(ea[k], eb[k], msg=lambda m: f"epoch {ea['epoch']} {k}: {m}")
    for k in ("train_acc", "val_acc", "test_acc", "best_epoch", "confusion"):
        assert a["final"][k] == pytest.approx(b["final"][k], rel=1e-7, abs=1e-7) if k != "confusion" else \
            a["final"][k] == b["final"][k]


def test_run_directory_wandb_and_one_variant_alone_equals_it_inside_the_study(tmp_path, capsys):
    study = run_cli(tmp_path / "study", "--epochs", "2", "--wandb", "offline",
                    *grid([0.01, 0.001], ["constant", "cosine"]))
    # Eager (--no-compile, in SMALL): no compile time printed, recorded or summarised.
    out = capsys.readouterr()
    assert "compile" not in out.out + out.err
    assert "compile" not in (study / "summary.md").read_text()
    timed = json.loads((study / "results.json").read_text())
    assert timed["timing"]["compile_s"] is None and all(p["compile_s"] is None for p in timed["populations"])
    alone = run_cli(tmp_path / "alone", "--epochs", "2", "--wandb", "disabled", *grid([0.001], ["cosine"]))

    # The run directory a user gets.
    for name in ("config.toml", "results.json", "metrics.csv", "summary.md", "plots/learning_curves.png",
                 "plots/confusion_best.png", "plots/per_class_f1.png", "checkpoints/population-0.pt"):
        assert (study / name).is_file(), name
    results = json.loads((study / "results.json").read_text())
    assert len(results["variants"]) == 4 and set(results["timing"]) >= {"compile_s", "step_s", "wall_s"}
    for v in results["variants"]:
        assert set(v) >= {"id", "hparams", "seed", "diverged", "epochs", "final"}
        assert [e["epoch"] for e in v["epochs"]] == [0, 1]
        assert set(v["final"]) >= {"train_acc", "val_acc", "test_acc", "best_epoch", "gap"}
        assert v["final"]["gap"] == pytest.approx(v["final"]["train_acc"] - v["final"]["val_acc"])
    assert len((study / "metrics.csv").read_text().strip().splitlines()) == 1 + 4 * 2
    assert "lr[lr=0.001,schedule=cosine]" in (study / "summary.md").read_text()
    # One offline W&B run per variant, none when disabled.
    assert len(list((study / "wandb").glob("offline-run-*"))) == 4
    assert not (alone / "wandb").exists() or not list((alone / "wandb").glob("offline-run-*"))

    # The variant trained alone has exactly the metrics it had inside the 4-variant population.
    vid = "lr[lr=0.001,schedule=cosine]-s0"
    assert_same_epochs(variants_by_id(study)[vid], variants_by_id(alone)[vid])


def test_resume_after_ctrl_c_ends_like_an_uninterrupted_run(tmp_path):
    args = ["--epochs", "3", "--wandb", "disabled", *grid([0.01, 0.001], ["cosine"])]
    full = run_cli(tmp_path / "full", *args)

    out = tmp_path / "cut" / "runs"
    cmd = [sys.executable, str(ROOT / "runner.py"), "--experiment", "08", "--out", str(out), *SMALL, *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 600
    while not list(out.glob("*/checkpoints/population-0.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first checkpoint; nothing was interrupted"
    proc.send_signal(signal.SIGINT)  # Ctrl-C: finish the step, checkpoint, say how to resume
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    (run_dir,) = list(out.iterdir())
    assert f"--resume {run_dir}" in err
    done_before = len(variants_by_id(run_dir)[next(iter(variants_by_id(run_dir)))]["epochs"])
    assert done_before < 3
    first_wall, first_processes = map(float, (run_dir / "wall_s").read_text().split())
    assert first_wall > 0 and first_processes == 1  # written as the interrupted process ended

    # --resume takes data, --train-limit and --dtype from the run directory (run.json).
    assert cli.main(["--resume", str(run_dir), "--wandb", "disabled", "--no-compile"]) == 0
    a, b = variants_by_id(full), variants_by_id(run_dir)
    assert a.keys() == b.keys()
    # The run's wall time adds both processes' (a study resumed across sessions reports its whole cost).
    timing = json.loads((run_dir / "results.json").read_text())["timing"]
    assert timing["processes"] == 2 and timing["wall_s"] > first_wall
    for vid in a:
        assert_same_epochs(a[vid], b[vid])


def test_resume_keeps_the_precision_the_run_started_with(tmp_path):
    """Precision decides the numbers, so --resume takes it from run.json, like data and dtype; a run
    started without --precision records the device default it actually used."""
    from fer_func.study import run
    from fer_func.study.options import RunOptions
    (tmp_path / "run.json").write_text(json.dumps({"data": "synthetic", "train_limit": 256, "dtype": "float32",
                                                   "profile": "cpu", "precision": "bf16"}))
    resumed = run._resolve(RunOptions(resume=tmp_path, precision="fp32"))
    assert resumed.precision == "bf16"
    started = run_cli(tmp_path / "fresh", "--epochs", "1", "--wandb", "disabled", *grid([0.01], ["constant"]))
    assert json.loads((started / "run.json").read_text())["precision"] == "fp32"  # the CPU default, resolved
    assert json.loads((started / "results.json").read_text())["precision"] == "fp32"
