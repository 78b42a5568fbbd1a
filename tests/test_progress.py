"""The run's progress bars (fer_func/study/progress.py): one bar over every step of every population,
its total exact at the end, the population's epochs as lines above it. (A search's trial bar:
tests/test_search.py.)"""
import json
import re

from fer_func import cli
from fer_func.population.plan import make_plan
from fer_func.study import resolved


def test_one_run_bar_counts_every_step_of_every_population(tmp_path, capsys, monkeypatch):
    from test_all import tiny_fer2013
    monkeypatch.setenv("FER_FUNC_CACHE", str(tmp_path / "cache"))
    csv = tiny_fer2013(tmp_path / "fer2013.csv", (("Training", 64), ("PublicTest", 32), ("PrivateTest", 32)))
    # two populations of one variant each (--max-k 1)
    assert cli.main(["--experiment", "08", "--out", str(tmp_path / "runs"), "--data", str(csv), "--profile", "full",
                     "--set", "model.knobs.channels=[4,8]", "--set", "model.knobs.fc=[16]", "--no-compile",
                     "--epochs", "2", "--set", "grid.optimizer.lr=[0.01,0.001]", "--set", 'grid.schedule.name=["constant"]',
                     "--max-k", "1", "--wandb", "disabled"]) == 0
    captured = capsys.readouterr()
    err = captured.err
    (run_dir,) = list((tmp_path / "runs").iterdir())
    variants = resolved.load(run_dir)
    pops = json.loads((run_dir / "results.json").read_text())["populations"]
    assert len(pops) == 2
    from fer_func.study import experiments
    total = sum(2 * make_plan(group, 64).steps_per_epoch for group in experiments.split(experiments.populations(variants), 1))
    done = re.findall(r"run: 100%\|[^|]*\| (\d+)/(\d+)", err)
    assert done and done[-1] == (str(total), str(total)), err[-2000:]
    for g in (1, 2):
        for e in (1, 2):
            # one line per finished epoch, written above the bars (tqdm.write: stdout)
            assert re.search(rf"pop {g}/2 \S+ K=1 epoch {e}/2: \d+ variant-samples/s, best val", captured.out), (g, e)
