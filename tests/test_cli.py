"""The command line: parsing into RunOptions, --help, --list, dispatch, and one-line user errors (exit 2)."""
import importlib.machinery
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from fer_func.config import ConfigError
from fer_func import cli
from fer_func.study.options import BenchOptions, RunOptions

ROOT = Path(__file__).resolve().parents[1]


def parse(*argv):
    return cli.to_options(cli.build_parser().parse_args(list(argv)))


def fake_module(monkeypatch, name, **attrs):
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


def test_parse_into_run_options():
    o = parse("--study", "lr", "--epochs", "3", "--train-limit", "500", "--seeds", "2", "--device", "cpu", "--no-compile",
              "--wandb", "disabled", "--out", "/tmp/x", "--set", "optimizer.lr=0.01", "--set", "batch_size=32",
              "--data", "synthetic")
    assert o == RunOptions(study="lr", epochs=3, train_limit=500, seeds=2, device="cpu", compile=False, wandb="disabled",
                           out=Path("/tmp/x"), overrides=("optimizer.lr=0.01", "batch_size=32"))
    assert o.all_overrides == ("optimizer.lr=0.01", "batch_size=32", "epochs=3")
    d = parse("--experiment", "04")
    assert (d.experiment, d.device, d.compile, d.wandb, d.out, d.seeds, d.bench) == ("04", "auto", True, "offline",
                                                                                    Path("runs"), 1, None)
    assert d.experiments == ROOT / "experiments.toml"
    b = parse("--bench", "--models", "mlp,simple_cnn", "resnet", "--k", "1", "8,32", "--batch", "64", "--steps", "20",
              "--json", "b.json")
    assert b.bench == BenchOptions(models=("mlp", "simple_cnn", "resnet"), k=(1, 8, 32), batch=64, steps=20,
                                   json=Path("b.json"))


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for opt in ("--study {lr,optimizer,batch_size}", "--experiment ID_OR_NAME", "--all", "--list", "--data",
                "--epochs N", "--train-limit N", "--seeds N", "--device {auto,cpu,cuda}", "--no-compile",
                "--wandb {offline,online,disabled}", "--out DIR", "--set KEY=VALUE", "--resume RUN_DIR", "--bench",
                "--models", "--k", "--batch", "--steps", "--json PATH"):
        assert opt in out, opt


def test_list(capsys):
    assert cli.main(["--list", "--device", "cpu"]) == 0
    rows = [line.split()[:5] for line in capsys.readouterr().out.splitlines()]
    assert ["id", "name", "kind", "variants", "model"] in rows
    assert ["08", "lr", "study", "12", "regularized_cnn"] in rows and ["10", "batch_size", "study", "5", "regularized_cnn"] in rows
    assert ["04", "regularized_cnn", "experiment", "1", "regularized_cnn"] in rows
    assert len([r for r in rows if r[:1] == ["04"]]) == 3  # once per profile: full, cpu and quick
    assert cli.main(["--list", "--seeds", "3", "--profile", "cpu", "--device", "cpu"]) == 0
    rows = [line.split()[:5] for line in capsys.readouterr().out.splitlines()]
    assert ["09", "optimizer", "study", "12", "regularized_cnn"] in rows and len([r for r in rows if r[:1] == ["09"]]) == 1


def test_dispatch_to_run(monkeypatch, capsys, tmp_path):
    seen = []
    fake_module(monkeypatch, "fer_func.study.run", run=lambda options, **hooks: seen.append(options) or tmp_path / "run1")
    assert cli.main(["--study", "optimizer", "--device", "cpu", "--set", "optimizer.beta2=0.99"]) == 0
    assert seen == [RunOptions(study="optimizer", device="cpu", overrides=("optimizer.beta2=0.99",))]
    assert f"run directory: {tmp_path / 'run1'}" in capsys.readouterr().out


def test_dispatch_to_bench(monkeypatch):
    seen = []
    fake_module(monkeypatch, "fer_func.bench", main=lambda options: seen.append(options))
    assert cli.main(["--bench", "--models", "mlp", "--k", "4", "--device", "cpu"]) == 0
    assert seen[0].bench == BenchOptions(models=("mlp",), k=(4,)) and seen[0].device == "cpu"


def _data_error():
    try:
        from fer_func.data import DataError
        return DataError
    except ImportError:
        return None


@pytest.mark.parametrize("argv, message", [
    (["--experiment", "99"], "unknown experiment '99'; choose one of 01/mlp, 02/simple_cnn"),
    (["--study", "lr", "--set", "optimizer.lr=0.5"], "--set optimizer.lr=0.5 is overwritten by the grid"),
    (["--experiment", "04", "--set", "optimizer.lr=-1"], "experiment 'regularized_cnn' (04): optimizer.lr = -1.0: the learning rate must be > 0"),
    (["--experiment", "04", "--set", "optimizer.nope=1"], "optimizer.nope: unknown key; valid keys: name, lr"),
    (["--experiment", "04", "--data", "/no/such/fer2013.csv"], "--data /no/such/fer2013.csv: no such file or directory; download fer2013.csv from "
     "https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge/data "
     "and pass --data PATH (or load(PATH)), or train on the built-in faces with --data synthetic"),
    (["--study", "lr", "--experiment", "04"], "choose exactly one of --study, --experiment, --all, --resume, --bench, --search or --list (got --study, --experiment)"),
    ([], "choose exactly one of --study"),
    (["--study", "lr", "--k", "4"], "--k only apply to --bench"),
    (["--study", "lr", "--one-at-a-time"], "--one-at-a-time only apply to --bench"),
    (["--study", "lr", "--epochs", "0"], "--epochs = 0: must be a positive integer"),
    (["--resume", "/no/such/run"], "--resume '/no/such/run': no config.toml there"),
    (["--study", "lr", "--experiments", "/no/such.toml"], "experiments file not found: '/no/such.toml'"),
    pytest.param(["--study", "lr", "--device", "cuda"], "--device cuda: no CUDA device is available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
])
def test_user_errors_are_one_line(argv, message, capsys, monkeypatch):
    fake_module(monkeypatch, "fer_func.study.run", run=lambda options, **hooks: pytest.fail("run() must not be reached"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {err[7:]}" and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("error", [ConfigError, _data_error()])
def test_errors_raised_by_run_are_one_line(error, capsys, monkeypatch):
    if error is None:
        pytest.skip("fer_func.data.DataError is not available")

    def run(options, **hooks):
        raise error("train_limit = 0: must be positive")
    fake_module(monkeypatch, "fer_func.study.run", run=run)
    assert cli.main(["--experiment", "01", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == "error: train_limit = 0: must be positive\n"


@pytest.mark.parametrize("argv, message", [
    (["--study", "momentum"], "error: argument --study: invalid choice: 'momentum'"),
    (["--experiment", "04", "--epochz", "3"], "error: unrecognized arguments: --epochz 3"),
    (["export", "runs/x", "--out", "m.pt", "--format", "zip"], "error: argument --format: invalid choice: 'zip'"),
    (["predict"], "error: the following arguments are required: MODEL, IMAGE"),
    (["demo"], "error: the following arguments are required: MODEL"),
    (["demo", "m.pt", "--port", "web"], "error: argument --port: invalid int value: 'web'"),
])
def test_argparse_errors_are_one_line_exit_2(argv, message, capsys):
    # No usage screen before the error: the line that matters must be the only one.
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(message) and err.count("\n") == 1 and "--help" in err, err


def test_help_names_every_mode_and_version(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for mode in ("--experiment ID_OR_NAME", "--study", "--all", "--search NAME", "--bench", "--resume RUN_DIR",
                 "--list", "--version", "export RUN_DIR", "predict MODEL", "demo MODEL"):
        assert mode in out, mode
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.split()[-1] == cli.version()


@pytest.mark.parametrize("how", ["runner.py", "console script", "-m", "-c"])
def test_malloc_reexec_runs_the_command_as_it_was_started(how, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(cli.runtime, "reexec_tuned", lambda argv=None: seen.append(argv))
    script = tmp_path / ("runner.py" if how == "runner.py" else "fer-func")
    script.write_text("")
    main_mod = types.ModuleType("__main__")
    main_mod.__spec__ = importlib.machinery.ModuleSpec("fer_func.__main__", None) if how == "-m" else None
    monkeypatch.setitem(sys.modules, "__main__", main_mod)
    argv0 = {"-m": str(ROOT / "fer_func" / "__main__.py"), "-c": "-c"}.get(how, str(script))
    monkeypatch.setattr(sys, "argv", [argv0, "--list"])
    cli._tune_malloc()
    # A console script or runner.py is a Python file to run again; -m re-runs the module, not its
    # __main__.py as a file (whose folder would shadow the stdlib); python -c has nothing to re-run.
    assert seen == {"-m": [["-m", "fer_func", "--list"]], "-c": []}.get(how, [[str(script), "--list"]])


def test_runner_script_end_to_end():
    p = subprocess.run([sys.executable, str(ROOT / "runner.py"), "--experiment", "99"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    assert p.stderr.startswith("error: unknown experiment '99'") and p.stderr.count("\n") == 1


OWN_FILE = """
[experiments.demo]
id = "01"
model = { name = "mlp", knobs = { hidden = [32] } }
optimizer = { name = "adam", lr = 1e-3 }
schedule = { name = "constant" }
augment = { enabled = false }
batch_size = 8
epochs = 1
seed = 0
"""


def test_own_experiments_file_without_profiles_runs_as_written(monkeypatch, tmp_path, capsys):
    # The default profile on a CPU is 'cpu'; a user's file without [profiles] must run as written (full),
    # not fail for a profile the user never asked for.
    path = tmp_path / "exp.toml"
    path.write_text(OWN_FILE)
    seen = []
    fake_module(monkeypatch, "fer_func.study.run", run=lambda options, **hooks: seen.append(options) or tmp_path)
    assert cli.main(["--experiment", "demo", "--experiments", str(path), "--device", "cpu"]) == 0, capsys.readouterr().err
    assert seen[0].profile_name == "full"
    assert cli.main(["--list", "--experiments", str(path), "--device", "cpu"]) == 0
    assert "profile full (default here)" in capsys.readouterr().out
    # Asked for by name, a missing profile is still the user's mistake.
    assert cli.main(["--experiment", "demo", "--experiments", str(path), "--device", "cpu", "--profile", "cpu"]) == 2
    assert "exp.toml has no such profile; choose one of full" in capsys.readouterr().err


def test_set_errors_name_the_set_not_the_file(capsys, monkeypatch):
    fake_module(monkeypatch, "fer_func.study.run", run=lambda options, **hooks: pytest.fail("run() must not be reached"))
    assert cli.main(["--experiment", "04", "--device", "cpu", "--set", "optimizer.lr=abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set optimizer.lr=abc: experiment 'regularized_cnn' (04): optimizer.lr = 'abc'")
    assert "experiments.toml" not in err
