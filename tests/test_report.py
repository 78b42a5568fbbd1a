"""The local report from a hand-made results structure: every number checked against hand computation."""
import csv
import json
import math
from pathlib import Path

import pytest

from fer_func.study import report, stats

NAN = float("nan")


def confusion(correct):
    """A 7x7 matrix with ``correct[k]`` right answers of 10 per class, the misses predicted as Neutral (6)."""
    m = [[0] * 7 for _ in range(7)]
    for k, c in enumerate(correct):
        m[k][k] += c
        m[k][6] += 10 - c
    return m


def variant(id, hparams, seed, accs, *, diverged=False, test=0.5, params=1234):
    epochs = [{"epoch": i + 1, "train_loss": 2.0 - 0.1 * i, "train_acc": a + 0.1, "val_loss": 1.9 - 0.1 * i,
               "val_acc": a, "lr": 1e-3, "epoch_s": 10.0 + i} for i, a in enumerate(accs)]
    if diverged:
        for e in epochs[1:]:
            e.update(train_loss=NAN, val_loss=math.inf)
    cm = confusion([9, 1, 5, 10, 6, 8, 7])
    return {"id": id, "hparams": hparams, "seed": seed, "diverged": diverged, "param_count": params, "epochs": epochs,
            "final": {"train_acc": accs[-1] + 0.1, "val_acc": accs[-1], "test_acc": test, "best_epoch": len(accs) - 1,
                      "gap": 0.1, "per_class": report.per_class(cm), "confusion": cm}}


@pytest.fixture
def results():
    return {"variants": [
        # diverged with a bogus high accuracy: must never be the "best" variant
        variant("lr[lr=0.1]-s0", {"optimizer.lr": 0.1}, 0, [0.2, 0.9], diverged=True),
        variant("lr[lr=0.01]-s0", {"optimizer.lr": 0.01}, 0, [0.40, 0.50], test=0.48),
        variant("lr[lr=0.01]-s1", {"optimizer.lr": 0.01}, 1, [0.42, 0.54], test=0.52),
        variant("lr[lr=0.001]-s0", {"optimizer.lr": 0.001}, 0, [0.30, 0.60], test=0.58, params=99999),
    ], "timing": {"compile_s": 12.5, "step_s": 0.0123, "wall_s": 100.0}}


def test_per_class_by_hand():
    p = report.per_class([[5, 1, 0], [2, 3, 1], [0, 0, 0]])
    assert p["precision"] == [5 / 7, 3 / 4, 0.0]   # column sums 7, 4, 1
    assert p["recall"] == [5 / 6, 3 / 6, 0.0]      # row sums 6, 6, 0 (absent class -> 0, not nan)
    assert p["f1"] == [2 * (5 / 7) * (5 / 6) / (5 / 7 + 5 / 6), 2 * 0.75 * 0.5 / 1.25, 0.0]


def test_per_class_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    cm = confusion([9, 1, 5, 10, 6, 8, 7])
    y = [r for r in range(7) for c in range(7) for _ in range(cm[r][c])]
    yhat = [c for r in range(7) for c in range(7) for _ in range(cm[r][c])]
    p, r, f, _ = metrics.precision_recall_fscore_support(y, yhat, zero_division=0)
    got = report.per_class(cm)
    assert got["precision"] == pytest.approx(list(p), rel=1e-12)
    assert got["recall"] == pytest.approx(list(r), rel=1e-12) and got["f1"] == pytest.approx(list(f), rel=1e-12)


KNOWN_ANSWERS = Path(__file__).parent / "known_answers"


def test_per_class_matches_sklearn_known_answers():
    # sklearn's answers, frozen by scripts/make_known_answers.py, so CI (no sklearn) checks them too
    ref = json.loads((KNOWN_ANSWERS / "sklearn_per_class.json").read_text())
    for name, case in ref["cases"].items():
        cm = [[0] * 7 for _ in range(7)]
        for t, p in zip(case["y_true"], case["y_pred"]):
            cm[t][p] += 1
        got = report.per_class(cm)
        for metric in ("precision", "recall", "f1"):
            assert got[metric] == pytest.approx(case[metric], rel=1e-12), (name, metric)


def test_t_quantile_against_tables():
    # two-sided 95% critical values of Student's t (any statistics table)
    for df, t in [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (9, 2.2621572), (30, 2.0422725)]:
        assert stats.t_quantile(0.95, df) == pytest.approx(t, abs=5e-8)
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 3, 7, 50, 301):
        for c in (0.9, 0.95, 0.99):
            assert stats.t_quantile(c, df) == pytest.approx(scipy_stats.t.ppf((1 + c) / 2, df), rel=1e-10)
    m, h = stats.mean_ci([0.50, 0.54])
    assert (m, h) == (pytest.approx(0.52), pytest.approx(12.7062047 * 0.02, rel=1e-8))  # sd/sqrt(2) = 0.02
    assert math.isnan(stats.mean_ci([0.3])[1])


def test_t_quantile_matches_scipy_known_answers():
    # scipy's answers, frozen by scripts/make_known_answers.py, so CI (no scipy) checks them too
    ref = json.loads((KNOWN_ANSWERS / "scipy_t_quantile.json").read_text())
    for c, ts in ref["t_by_confidence"].items():
        for df, t in zip(ref["df"], ts, strict=True):
            assert stats.t_quantile(float(c), df) == pytest.approx(t, rel=1e-10), (c, df)


def test_best_variant_ignores_diverged(results):
    assert report.best_variant(results) == 3
    for v in results["variants"]:
        v["diverged"] = True
    assert report.best_variant(results) is None


def test_write_run(tmp_path, results):
    paths = report.write_run(tmp_path, results)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in paths)
    assert names == ["metrics.csv", "plots/confusion_best.png", "plots/learning_curves.png", "plots/per_class_f1.png",
                     "results.json", "summary.md"]

    # results.json: strict JSON (no NaN/Infinity tokens), the structure as given with non-finite -> null
    def no_constants(token):
        raise AssertionError(f"non-standard JSON token {token}")
    back = json.loads((tmp_path / "results.json").read_text(), parse_constant=no_constants)
    assert back["variants"][0]["epochs"][1]["train_loss"] is None and back["variants"][0]["epochs"][1]["val_loss"] is None
    assert back["variants"][1] == results["variants"][1] and back["timing"] == results["timing"]
    assert back["variants"][3]["final"]["confusion"][2] == [0, 0, 5, 0, 0, 0, 5]

    # metrics.csv: one row per variant per epoch, hparams as columns
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 8 and list(rows[0]) == ["id", "seed", "optimizer.lr", *report.EPOCH_KEYS]
    assert rows[5] == {"id": "lr[lr=0.01]-s1", "seed": "1", "optimizer.lr": "0.01", "epoch": "2", "train_loss": "1.9",
                       "train_acc": str(0.54 + 0.1), "val_loss": "1.7999999999999998", "val_acc": "0.54", "lr": "0.001",
                       "epoch_s": "11.0"}
    assert rows[1]["train_loss"] == "" and rows[1]["val_loss"] == ""

    # summary.md: seeds collapse into one row with mean ± t-interval half-width
    md = (tmp_path / "summary.md").read_text()
    table = {line.split(" | ")[0].lstrip("| "): line.strip("| \n").split(" | ") for line in md.splitlines()
             if line.startswith("| lr[")}
    assert list(table) == ["lr[lr=0.1]", "lr[lr=0.01]", "lr[lr=0.001]"]
    half = 100 * 12.7062047 * 0.02
    assert table["lr[lr=0.01]"] == ["lr[lr=0.01]", "2", "1,234", f"62.00 ± {half:.2f}", f"52.00 ± {half:.2f}",
                                    "10.00 ± 0.00", f"50.00 ± {half:.2f}", "10.5", "no"]
    assert table["lr[lr=0.001]"] == ["lr[lr=0.001]", "1", "99,999", "70.00", "60.00", "10.00", "58.00", "10.5", "no"]
    assert table["lr[lr=0.1]"][3:7] == ["—", "—", "—", "—"] and table["lr[lr=0.1]"][-1] == "yes"
    assert "Best variant: **lr[lr=0.001]-s0** (val acc 60.00%, best epoch 2)." in md
    assert "compile_s = 12.50, step_s = 0.01, wall_s = 100.00" in md


def test_plots_are_real_images(tmp_path, results):
    from matplotlib import image
    report.write_run(tmp_path, results)
    for name, min_size in [("learning_curves", (400, 1000)), ("confusion_best", (500, 600)), ("per_class_f1", (200, 700))]:
        raw = (tmp_path / "plots" / f"{name}.png").read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        img = image.imread(tmp_path / "plots" / f"{name}.png")
        assert img.shape[0] >= min_size[0] and img.shape[1] >= min_size[1], (name, img.shape)
        assert img[..., :3].std() > 0.05, f"{name} looks blank"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files


@pytest.mark.parametrize("n", [4, 58, 90])
def test_curves_keep_their_axes_under_the_legend_of_a_whole_study(tmp_path, n, monkeypatch):
    # --all with two seeds is 58 variants: a fixed-size figure let the legend squash the axes to nothing and
    # matplotlib warned "constrained_layout not applied". The legend now takes columns and the figure grows.
    import warnings
    from fer_func.study import plots
    legends = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: legends.append(fig.axes[-1].get_legend()) or fig.savefig(path))
    variants = [{"id": f"lr[lr=0.001,schedule=constant,batch_size={i}]-s{i}",
                 "epochs": [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss": 1.1, "train_acc": 0.3,
                             "val_acc": 0.31 + i / 1000} for e in range(3)]} for i in range(n)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any layout warning fails the test
        plots.learning_curves(tmp_path / "lc.png", variants)
        plots.mean_curves(tmp_path / "mc.png", [{"label": v["id"], "epochs": [0, 1, 2], "train": [0.3] * 3,
                                                 "val": [0.31] * 3, "val_half": [0.01] * 3} for v in variants])
    assert len(legends) == 2
    for legend, axes in zip(legends, (2, 1)):  # learning_curves' accuracy axes, mean_curves' only axes
        assert len(legend.get_texts()) == n and legend._ncols == math.ceil(n / plots.LEGEND_ROWS)
        assert len(legend.figure.axes) == axes
        assert all(ax.get_position().height > 0.5 and ax.get_position().width > 0.15 for ax in legend.figure.axes)


def test_summary_says_where_the_numbers_come_from(results):
    # best_epoch is an index from 0 (the engine's); the summary counts from 1 like the progress bar.
    results["data"] = "/data/fer2013.csv (train 28709, val 3589, test 3589)"
    md = report.summary_md(results)
    assert "Data: /data/fer2013.csv (train 28709, val 3589, test 3589)." in md and "generated" not in md
    assert "val = FER2013's PublicTest split" in md and "test = its PrivateTest split" in md
    assert "gap can be negative" in md and "dropout and augmentation" in md
    assert "best epoch 2)" in md and "Epochs count from 1" in md
    results["data"] = "synthetic FER (seed 0) (train 28709, val 3589, test 3589)"
    assert "generated FER2013-shaped faces" in report.summary_md(results)


def test_eager_run_reports_no_compile_time(results):
    # --no-compile: the run records compile_s as None, and the summary shows no compile numbers at all.
    results["timing"]["compile_s"] = None
    results["populations"] = [{"model": "mlp", "k": 4, "compile_s": None, "eval_compile_s": None, "step_s": 0.01,
                               "wall_s": 12.0}]
    md = report.summary_md(results)
    assert "compile" not in md and "| 1 | mlp | 4 | 0.010 | 12 |" in md and "step_s = 0.01" in md
    results["populations"][0].update(compile_s=3.0, eval_compile_s=1.0)
    assert "| 1 | mlp | 4 | 3.0 | 1.0 | 0.010 | 12 |" in report.summary_md(results)


def test_single_seed_summary_has_no_seed_column(tmp_path, results):
    results["variants"] = results["variants"][3:]
    md = report.summary_md(results)
    assert "| variant | parameters | train acc % |" in md and "CI" not in md
    assert "| lr[lr=0.001] | 99,999 | 70.00 | 60.00 | 10.00 | 58.00 | 10.5 | no |" in md


def test_run_dir_and_config(tmp_path):
    from fer_func.config import VariantConfig
    from fer_func.study import resolved
    a, b = report.new_run_dir(tmp_path, "lr study"), report.new_run_dir(tmp_path, "lr study")
    assert a != b and a.name.endswith("_lr-study") and (a / "plots").is_dir() and (a / "checkpoints").is_dir()
    vs = [VariantConfig(experiment="x", seed=s) for s in (0, 1)]
    assert resolved.load(report.write_config(a, vs)) == vs
