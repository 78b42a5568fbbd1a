"""The results page: verdicts on hand-made numbers, and the page and its figures from a fake whole-study run."""
import json
import random
import re

import pytest

from fer_func.config import ConfigError
from fer_func.study import conclusions, results, verdicts

# Every experiment and grid of `runner.py --all`, with a made-up true val acc per configuration (fractions).
GRIDS = {
    "mlp": [({}, 0.26)], "simple_cnn": [({}, 0.45)], "large_cnn": [({}, 0.38)], "regularized_cnn": [({}, 0.55)],
    "augmented_cnn": [({}, 0.58)], "resnet": [({}, 0.57)], "tiny_cnn": [({}, 0.32)],
    "lr": [({"optimizer.lr": lr, "schedule.name": s}, acc) for lr, acc in ((0.1, 0.2), (0.01, 0.5), (0.001, 0.58),
                                                                          (0.0001, 0.45))
           for s in ("constant", "cosine", "plateau")],
    "optimizer": [({"optimizer": o}, acc) for o, acc in (("sgd", 0.55), ("adam", 0.58), ("rmsprop", 0.56),
                                                         ("adamw", 0.57))],
    "batch_size": [({"batch_size": b}, acc) for b, acc in ((16, 0.59), (32, 0.585), (64, 0.58), (128, 0.56),
                                                           (256, 0.54))],
    "best": [({}, 0.62)],
}
MODELS = {name: name for name in ("mlp", "simple_cnn", "large_cnn", "resnet", "tiny_cnn")}  # the rest: regularized_cnn
EPOCHS = 6


def confusion():
    # PrivateTest-like class counts: "Happy" (3) is the majority, 900 of 3,589 (25.1%).
    counts = [490, 55, 530, 900, 600, 415, 599]
    return [[n if r == c else 0 for c in range(7)] for r, n in enumerate(counts)]


def label(experiment, hparams):
    """As experiments.variant_id: "lr[lr=0.01,schedule=cosine]", "optimizer[optimizer=adam]", "mlp"."""
    def short(key):
        words = key.split(".")
        return words[-2] if words[-1] == "name" and len(words) > 1 else words[-1]
    parts = [f"{short(k)}={v:g}" if isinstance(v, float) else f"{short(k)}={v}" for k, v in hparams.items()]
    return experiment + (f"[{','.join(parts)}]" if parts else "")


def fake_results(seeds=3, seed=0, noise=0.002):
    """A results.json of a `--all --seeds N` run: every experiment, each point of each grid, N seeds."""
    rng = random.Random(seed)
    variants, populations, pop_of = [], [], {}
    for experiment, points in GRIDS.items():
        model = MODELS.get(experiment, "regularized_cnn")
        # As in `--all`: the batch-size study is a population of its own; 04, 05, 08, 09, 11 share one.
        group = (model, experiment == "batch_size")
        if group not in pop_of:
            pop_of[group] = len(populations)
            populations.append({"model": model, "k": 0, "compile_s": rng.uniform(10, 60),
                                "eval_compile_s": rng.uniform(2, 9), "step_s": rng.uniform(0.05, 0.3),
                                "wall_s": rng.uniform(100, 900)})
        for hparams, acc in points:
            for s in range(seeds):
                lr = hparams.get("optimizer.lr")
                diverged = lr == 0.1 and s > 0  # lr 0.1: two seeds blow up, one crawls along at chance
                # Learns over the first two epochs, then sits on its plateau (plateau.py: under a point gained
                # over the last third of the epochs).
                val = [acc * min(1.0, 0.7 + 0.3 * e / 2) + rng.gauss(0, noise) for e in range(EPOCHS)]
                if lr == 0.0001:
                    val[0] -= 0.1
                train = [v + (0.3 if experiment == "large_cnn" else 0.02) for v in val]
                epochs = [{"epoch": e + 1, "train_loss": 1.5, "train_acc": train[e], "val_loss": 1.4,
                           "val_acc": None if diverged and e > 0 else val[e], "lr": lr or 1e-3, "epoch_s": 3.0}
                          for e in range(EPOCHS)]
                best = max(range(EPOCHS), key=val.__getitem__)
                variants.append({
                    "id": f"{label(experiment, hparams)}-s{s}", "experiment": experiment, "hparams": hparams, "seed": s,
                    "diverged": diverged, "param_count": 1000 + len(variants), "macs": 2_000_000,
                    "population": pop_of[group], "epochs": epochs,
                    "final": {"train_acc": train[best], "val_acc": val[best], "test_acc": val[best] - 0.01,
                              "best_epoch": best + 1, "gap": train[best] - val[best],
                              "per_class": {"precision": [0.5] * 7, "recall": [0.5] * 7, "f1": [0.5] * 7},
                              "confusion": confusion()}})
                populations[pop_of[group]]["k"] += 1
    return {"command": "python runner.py --all --seeds 3 --data fer2013.csv.gz", "started": "2026-12-01 23:50",
            "machine": {"host_cpus": 2, "threads": 2, "torch": "2.5.1", "python": "3.11.2", "cpu": "x86_64",
                        "gpu": None, "malloc": "glibc", "date": "2026-12-01 23:50"},
            "profile": "cpu", "train_limit": 4000, "data": "fer2013.csv.gz (train 4000, val 3589, test 3589)",
            "device": "cpu", "variants": variants, "populations": populations,
            "timing": {"compile_s": 300.0, "step_s": 0.3, "wall_s": 3725.0}}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("results")
    run_dir = tmp / "run"
    (run_dir / "plots").mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(fake_results()))
    (run_dir / "plots" / "confusion_best.png").write_bytes(b"\x89PNG fake")
    out = tmp / "docs" / "results.md"
    paths = results.write(run_dir, out)
    return out, paths, out.read_text()


# --- verdicts --------------------------------------------------------------------------------

def test_verdict_from_constructed_numbers():
    win = {0: 0.60, 1: 0.62, 2: 0.61}
    base = {0: 0.50, 1: 0.51, 2: 0.52}
    assert verdicts.compare(win, base).verdict == verdicts.HOLDS
    assert verdicts.compare(base, win).verdict == verdicts.FAILS
    assert verdicts.compare(base, win, "<").verdict == verdicts.HOLDS
    overlapping = {0: 0.49, 1: 0.53, 2: 0.515}
    assert verdicts.compare(overlapping, base).verdict == verdicts.NOISE
    # One seed: no interval, never a verdict either way.
    assert verdicts.compare({0: 0.9}, {0: 0.1}).verdict == verdicts.NOISE
    assert verdicts.compare({}, base).verdict == verdicts.UNTESTED


def test_paired_difference_uses_common_seeds():
    # A shared per-seed offset cancels when paired: the difference is exactly +0.01 every seed.
    a = {0: 0.41, 1: 0.61, 2: 0.51}
    b = {0: 0.40, 1: 0.60, 2: 0.50}
    mean, half, n, paired = verdicts.difference(a, b)
    assert paired and n == 3 and mean == pytest.approx(0.01) and half == pytest.approx(0, abs=1e-12)
    assert verdicts.compare(a, b).verdict == verdicts.HOLDS
    # Different seeds: Welch's unpaired interval, which cannot see past the seed-to-seed spread.
    mean, half, n, paired = verdicts.difference(a, {5: 0.40, 6: 0.60, 7: 0.50})
    assert not paired and n == 6 and mean == pytest.approx(0.01) and half > 0.1


def test_close_and_combine():
    a = {0: 0.580, 1: 0.585, 2: 0.582}
    assert verdicts.close(a, {0: 0.581, 1: 0.584, 2: 0.583}).verdict == verdicts.HOLDS
    assert verdicts.close(a, {0: 0.48, 1: 0.485, 2: 0.482}).verdict == verdicts.FAILS
    assert verdicts.combine([verdicts.HOLDS, verdicts.HOLDS]) == verdicts.HOLDS
    assert verdicts.combine([verdicts.HOLDS, verdicts.NOISE]) == verdicts.NOISE
    assert verdicts.combine([verdicts.NOISE, verdicts.FAILS]) == verdicts.FAILS
    assert verdicts.combine([verdicts.UNTESTED]) == verdicts.UNTESTED


def test_conclusions_on_the_fake_study():
    data = fake_results()
    found = {c.key: c for c in conclusions.conclusions(conclusions.configurations(data), conclusions.majority_rate(data))}
    assert found["a"].verdict == verdicts.HOLDS                  # 45 vs 26
    assert found["b"].verdict == verdicts.HOLDS                  # 03's train acc runs 30 points above its val
    assert found["d"].verdict == verdicts.FAILS                  # made-up 06 is 2 points above 04, beyond the noise
    assert found["f"].verdict == verdicts.HOLDS                  # two seeds diverge, one stays near chance
    assert found["i"].verdict == verdicts.HOLDS
    assert found["l"].verdict == verdicts.HOLDS
    assert found["m"].verdict == verdicts.UNTESTED
    assert "25.1%" in found["f"].evidence                      # the majority class, read from the confusion matrices


def test_a_missing_experiment_is_not_tested():
    data = fake_results()
    data["variants"] = [v for v in data["variants"] if v["experiment"] != "mlp"]
    found = {c.key: c for c in conclusions.conclusions(conclusions.configurations(data), None)}
    assert found["a"].verdict == verdicts.UNTESTED and "01 mlp" in found["a"].evidence


# --- the page --------------------------------------------------------------------------------

def test_page_has_every_row_conclusion_and_the_compile_table(written):
    out, paths, text = written
    for v in fake_results()["variants"]:
        assert f"| {re.sub(r'-s[0-9]+$', '', v['id'])} |" in text
    assert "### Time and efficiency per population" in text and "| step compile s | eval compile s |" in text
    assert "`python runner.py --all --seeds 3 --data fer2013.csv.gz`" in text
    assert "1 h 2 min 5 s" in text and "4,000" in text and "`cpu` profile" in text
    rows = [line for line in text.splitlines() if re.match(r"\| [a-m]′? \| ", line)]
    assert [r.split(" | ")[0][2:] for r in rows] == list("abc") + ["c′"] + list("defghijklm")
    verdicts = re.compile(r"\*\*(holds|does not hold|within noise|not tested|not converged)\*\*")
    assert all(verdicts.search(r) for r in rows)


def test_figures_exist_and_the_links_resolve(written):
    out, paths, text = written
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 1 + len(results.EXPERIMENT_IDS) + 1  # bars, one curve per experiment, the copied confusion
    for link in links:
        assert (out.parent / link).is_file(), link
        assert link.startswith("img/results/")
    assert all(p.is_file() for p in paths)


def test_cli_writes_the_page(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = fake_results(seeds=2)
    data["variants"] = [v for v in data["variants"] if v["experiment"] in ("mlp", "simple_cnn")]
    data.update(profile="full", train_limit=None)
    (run_dir / "results.json").write_text(json.dumps(data))
    out = tmp_path / "site" / "results.md"
    assert results.main([str(run_dir), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| 02 | simple_cnn |" in text and "Scaled rows" not in text and "4,000 (the whole Training split)" in text
    assert "| a | " in text and "| b | " in text and "**not tested** | this run has no 04 regularized_cnn" in text
    assert (tmp_path / "site" / "img" / "results" / "val_acc.png").is_file()


def test_a_run_dir_without_results_json_is_one_line_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="results.json"):
        results.load(tmp_path)
    assert results.main([str(tmp_path), "--out", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(tmp_path / "results.json") in err
    assert "runner.py" in err
    assert not (tmp_path / "r.md").exists()


def test_a_large_cnn_that_never_learned_does_not_make_regularization_close_its_gap():
    """03 stuck at chance has no gap: (b) and (e) presuppose that it overfits, so they do not hold."""
    data = fake_results()
    for v in data["variants"]:
        if v["experiment"] == "large_cnn":
            v["final"].update(train_acc=0.25, val_acc=0.249 + 0.001 * v["seed"], gap=0.001 - 0.001 * v["seed"])
            for e in v["epochs"]:
                e.update(train_acc=0.25, val_acc=0.249 + 0.001 * v["seed"])
    found = {c.key: c for c in conclusions.conclusions(conclusions.configurations(data), conclusions.majority_rate(data))}
    assert found["b"].verdict == verdicts.FAILS and "03 overfits" in found["b"].evidence
    assert found["e"].verdict == verdicts.FAILS


def test_a_row_still_learning_at_its_cap_turns_its_verdicts_into_not_converged():
    """05 still gains 3 points a epoch at the end: (c) and (c′) rest on it and draw no verdict; (a) does not."""
    data = fake_results()
    for v in data["variants"]:
        if v["experiment"] == "augmented_cnn":
            for e, rec in enumerate(v["epochs"]):
                rec["val_acc"] = 0.40 + 0.03 * e
    found = {c.key: c for c in conclusions.conclusions(conclusions.configurations(data), conclusions.majority_rate(data))}
    assert found["c"].verdict == verdicts.NOT_CONVERGED and "augmented_cnn" in found["c"].evidence
    assert found["c′"].verdict == verdicts.NOT_CONVERGED
    assert found["a"].verdict == verdicts.HOLDS
    row = conclusions.configurations(data)[4]
    assert row.experiment == "augmented_cnn" and not row.plateau.reached and "+6.0 pp over the last 2 of 6" in row.plateau.how


def test_a_row_whose_seeds_all_stopped_early_has_reached_its_plateau():
    from fer_func.study.plateau import plateau
    climbing = [{"epochs": [{"val_acc": 0.3 + 0.05 * e} for e in range(6)], "diverged": False,
                 "final": {"stopped_epoch": None}}]
    assert not plateau(climbing).reached
    stopped = [{**climbing[0], "final": {"stopped_epoch": 4}}, {**climbing[0], "diverged": True, "final": {}}]
    p = plateau(stopped)
    assert p.reached and p.how.endswith("epoch 5, 6")


def test_the_page_states_goals_and_each_rows_plateau(written):
    out, paths, text = written
    assert "### Goals" in text and "05 augmented_cnn best val ≥ 54%" in text and "03 last-epoch gap ≥ 10 pp" in text
    assert "| **yes**: " in text and "GMAC/s" in text and "seeds: 3 (0, 1, 2)" in text
