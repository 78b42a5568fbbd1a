"""The installable tool: a wheel that carries experiments.toml (made by the build, never committed) and
runs as ``python -m fer_func`` and ``fer-func`` from any directory."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "experiments.toml")


def _env(**extra):
    # Only the installed copy may be importable: not this checkout (cwd, PYTHONPATH) and not /work/main.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | {"WANDB_MODE": "disabled", **extra}


def test_wheel_ships_experiments_and_runs_from_elsewhere(tmp_path):
    src = tmp_path / "src"  # built from a copy: the build's build/ and *.egg-info stay out of the checkout
    shutil.copytree(ROOT / "fer_func", src / "fer_func", ignore=shutil.ignore_patterns("__pycache__", "*.so",
                                                                                        "experiments.toml"))
    for name in BUILD_FILES:
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", str(src), "-w", str(tmp_path / "whl"), "--no-deps", "--no-build-isolation"],
                   check=True, timeout=120)
    wheel, = (tmp_path / "whl").glob("fer_func-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert z.read("fer_func/experiments.toml") == (ROOT / "experiments.toml").read_bytes()
        assert "fer-func = fer_func.cli:main" in next(z.read(n).decode() for n in z.namelist()
                                                      if n.endswith("entry_points.txt"))
    assert not (ROOT / "fer_func" / "experiments.toml").exists(), "the packaged copy must not be in the checkout"

    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=120)
    env, cwd = _env(PYTHONPATH=str(target)), tmp_path / "elsewhere"
    cwd.mkdir()
    p = subprocess.run([sys.executable, "-m", "fer_func", "--list", "--profile", "cpu", "--device", "cpu"],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "profile cpu" in p.stdout and " lr " in p.stdout
    p = subprocess.run([str(target / "bin" / "fer-func"), "--version"], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip().startswith("fer-func "), p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-c", "import fer_func.study.options as o; print(o.DEFAULT_EXPERIMENTS)"],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == str(target / "fer_func" / "experiments.toml"), p.stdout + p.stderr
