"""Evaluation views: probabilities, test-time augmentation and ensembles equal a by-hand computation.

The reference is the model's pure ``apply`` run one member at a time on the whole split, softmaxed,
averaged by hand over the TTA views (mirrored and shifted by explicit slicing, not views.py's code)
and over the ensemble's members; the population's view program runs chunked (a masked last chunk),
vmapped or looped, eager or compiled, in float64, so "equal" is assert_close's float64 defaults.
Compiled views run under ``fail_on_recompile`` after their first call. The study side is checked
end to end through the CLI on a tiny FER2013-format CSV.
"""
import json

import numpy as np
import pytest
import torch

from fer_func import tree
from fer_func.config import ConfigError, ModelConfig, OptimizerConfig, VariantConfig
from fer_func.population import Population, views
from fer_func.population.step import MEAN, STD
from fer_func import cli
from fer_func.study import ensembles, results

from conftest import QUICK, TINY, random_data, tiny_fer2013

F64 = torch.float64
NET = ModelConfig("regularized_cnn", {"channels": [3, 4], "convs_per_block": 1, "fc": [8], "dropout_conv": 0.0,
                                      "dropout_fc": 0.0})  # BatchNorm: the model_state must reach the program
VARIANTS = [VariantConfig(model=NET, optimizer=OptimizerConfig("adam", lr=lr), epochs=1, batch_size=16, seed=seed)
            for lr, seed in ((3e-3, 0), (1e-2, 1), (3e-3, 2))]


@pytest.fixture(scope="module")
def data():
    return random_data(n_train=64, n_eval=24)


@pytest.fixture(scope="module")
def trained(data):
    """Three distinct members (seeds) whose BatchNorm statistics are not the trivial 0 and 1, so a program
    that ignored model_state would fail. The views only read parameters: no training needed."""
    pop = Population(VARIANTS, data, dtype=F64, compile=False)
    g = torch.Generator().manual_seed(0)
    noise = lambda t: torch.rand(t.shape, generator=g, dtype=F64)  # noqa: E731
    state = {k: (0.5 + 1.5 * noise(t) if k.endswith("running_var") else  # (K, C): running stats of a model state
                 t + noise(t) - 0.5 if k.endswith("running_mean") else t) for k, t in pop.carry["model_state"].items()}
    return pop.carry["params"], state


def moved(x, dy, dx):
    """``x`` with its content moved ``dy`` down and ``dx`` right, zeros coming in: slicing by hand."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


BY_HAND_VIEWS = {None: lambda x: [x],
                 "flip": lambda x: [x, x.flip(-1)],
                 "flip+shift": lambda x: [x, x.flip(-1), moved(x, 0, 2), moved(x, 0, -2), moved(x, 2, 0), moved(x, -2, 0)]}


def by_hand(pop, params, model_state, split, tta=None):
    """(K, N, 7): each member alone through ``model.apply``, softmax, mean over the views."""
    x, _ = pop.data.split(split)
    x = x.unsqueeze(1).to(F64) / 255.0
    out = []
    for i in range(len(pop.variants)):
        p, s = tree.index(params, i), tree.index(model_state, i)
        probs = [torch.softmax(pop.model.apply(p, s, (v - MEAN) / STD, key=None, train=False)[0], -1)
                 for v in BY_HAND_VIEWS[tta](x)]
        out.append(torch.stack(probs).mean(0))
    return torch.stack(out).numpy()


@pytest.fixture(scope="module")
def reference(data, trained):
    """by_hand on the test split, once per TTA setting for the whole module (the members never change)."""
    pop, done = Population(VARIANTS, data, dtype=F64, compile=False), {}

    def get(tta):
        if tta not in done:
            done[tta] = by_hand(pop, *trained, "test", tta)
        return done[tta]
    return get


@pytest.mark.parametrize("mode, compile, tta", [("vmap", False, "flip+shift"), ("loop", False, "flip"),
                                                ("vmap", "aot_eager", "flip")])
def test_views_and_ensemble_equal_a_by_hand_average_of_each_members_softmax(data, trained, reference, mode, compile,
                                                                           tta):
    # eval_chunk 16 over 24 images: the last chunk is masked, as in every real split.
    pop = Population(VARIANTS, data, dtype=F64, compile=compile, mode=mode, eval_chunk=16)
    params, state = trained
    r = pop.evaluate_views("test", params=params, model_state=state, tta=tta, members=[0, 2])
    plain, augmented = reference(None), reference(tta)
    torch.testing.assert_close(r["probs"], plain)
    torch.testing.assert_close(r["tta_probs"], augmented)
    labels = data.labels["test"].numpy()
    np.testing.assert_array_equal(r["confusion"], views.confusions(plain, labels))
    if not compile:  # per variant, the plain view is exactly what evaluate() measures (compiled: one compile less)
        np.testing.assert_array_equal(r["confusion"], pop.evaluate("test", params, state)["confusion"])
    np.testing.assert_allclose(r["tta_acc"], (augmented.argmax(-1) == labels).mean(-1))
    for key, p in (("ensemble", plain), ("tta_ensemble", augmented)):
        mean = (p[0] + p[2]) / 2
        ens = r[key]
        assert ens["members"] == [0, 2]
        assert ens["acc"] == pytest.approx((mean.argmax(-1) == labels).mean())
        np.testing.assert_array_equal(ens["confusion"], views.confusion(mean.argmax(-1), labels))
        assert ens["confusion"].sum() == len(labels)
        assert ens["per_class"] == views.per_class(ens["confusion"])


@pytest.mark.parametrize("mode, compile", [("vmap", False), ("loop", False), ("vmap", "aot_eager")])
def test_the_eval_pass_gives_the_plain_views_probabilities(data, trained, reference, mode, compile):
    # What lets a run's best-epoch test pass (finish) feed the ensembles without a view program of its own.
    pop = Population(VARIANTS, data, dtype=F64, compile=compile, mode=mode, eval_chunk=16)
    params, state = trained
    r = pop.evaluate("test", params, state, probs=True)
    np.testing.assert_allclose(r["probs"], reference(None), rtol=1e-7, atol=1e-12)  # float64
    labels = data.labels["test"].numpy()
    np.testing.assert_array_equal(r["confusion"], views.confusions(r["probs"], labels))
    assert "probs" not in pop.evaluate("test", params, state)  # only when asked for
    pop.train_epoch()
    finals, probs = pop.finish(with_probs=True)
    assert finals == pop.finish()
    best = pop.evaluate("test", pop.best["params"], pop.best["model_state"], probs=True)["probs"]
    np.testing.assert_array_equal(probs, best)
    assert [f["test_acc"] for f in finals] == pytest.approx(list((best.argmax(-1) == labels).mean(-1)))


def test_members_as_a_mask_equal_members_as_indices_and_diverged_variants_are_left_out_by_default(data, trained):
    pop = Population(VARIANTS, data, dtype=F64, compile=False, eval_chunk=24)
    params, state = trained
    kw = dict(params=params, model_state=state)
    by_index = pop.evaluate_views("val", members=[1, 2], **kw)["ensemble"]
    by_mask = pop.evaluate_views("val", members=torch.tensor([False, True, True]), **kw)["ensemble"]
    assert by_index["members"] == by_mask["members"] == [1, 2] and by_index["acc"] == by_mask["acc"]
    np.testing.assert_array_equal(by_index["confusion"], by_mask["confusion"])
    assert pop.evaluate_views("val", **kw)["ensemble"]["members"] == [0, 1, 2]

    pop.carry["diverged"] = torch.tensor([False, True, False])
    r = pop.evaluate_views("val", **kw)
    assert r["ensemble"]["members"] == [0, 2] and r["tta_ensemble"] is None and r["tta_acc"] is None
    pop.carry["diverged"] = torch.ones(3, dtype=torch.bool)
    assert pop.evaluate_views("val", **kw)["ensemble"] is None  # nothing left to combine
    assert pop.evaluate_views("val", members=[1], **kw)["ensemble"]["members"] == [1]  # asked for: counted

    for members, says in (([0, 3], "out of range"), ([1, 1], "repeated"), ([], "no variant"),
                          ([True, False], "one entry per variant"), ([0.5], "variant indices")):
        with pytest.raises(ValueError, match=says):
            pop.evaluate_views("val", members=members, **kw)
    with pytest.raises(ValueError, match="choose one of"):
        pop.evaluate_views("val", tta="rotate", **kw)


def test_views_never_recompile_across_calls_parameters_members_splits_and_populations(data, trained):
    pop = Population(VARIANTS, data, dtype=F64, compile="aot_eager", eval_chunk=16)
    assert pop.compile == "aot_eager"  # the views program compiles as the population does
    params, state = trained
    pop.evaluate_views("val")  # first calls: one compile per TTA setting
    pop.evaluate_views("val", tta="flip")
    other = Population([v.replace(seed=v.seed + 10) for v in VARIANTS], data, dtype=F64, compile="aot_eager",
                       eval_chunk=16)
    with torch.compiler.set_stance("fail_on_recompile"):
        a = pop.evaluate_views("test", params=params, model_state=state, tta="flip", members=[0, 1])
        b = pop.evaluate_views("test", params=tree.tree_map(lambda t: 1.5 * t, params), model_state=state,
                               members=np.array([True, False, True]))
        c = other.evaluate_views("val", tta="flip")
    assert not np.allclose(a["probs"], b["probs"]) and c["tta_probs"].shape == (3, 24, 7)


def test_shift_moves_the_content_and_fills_with_black():
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    right = views.shift(x, 0, 2)
    torch.testing.assert_close(right[..., 2:], x[..., :2])
    assert (right[..., :2] == 0).all()
    torch.testing.assert_close(views.shift(x, -2, 0)[..., :2, :], x[..., 2:, :])
    torch.testing.assert_close(views.shift(x, 0, 2), moved(x, 0, 2))


def test_top_picks_the_best_scores_ties_to_the_lower_index():
    assert views.top([0.3, 0.5, 0.5, 0.1], 2) == [1, 2]
    assert views.top([0.3, 0.5, 0.5, 0.1], 2, eligible=[True, False, True, True]) == [0, 2]
    with pytest.raises(ValueError, match="between 1 and"):
        views.top([0.3], 2)


def test_experiment_options_are_checked_by_name():
    where = "experiments.toml: experiment 'lr'"
    assert ensembles.check(where, {"ensemble": "top:3", "tta": "flip"}, 4) == {"ensemble": "top:3", "tta": "flip"}
    for chosen, says in (({"ensemble": "top:5"}, "between 1 and the experiment's 4 variants"),
                         ({"ensemble": "best"}, 'choose "seeds"'), ({"tta": "flips"}, "tta = 'flips': choose one of")):
        with pytest.raises(ConfigError, match=says):
            ensembles.check(where, chosen, 4)


# --- the study: runner.py on a tiny FER2013-format CSV -------------------------------------------

@pytest.fixture
def csv(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_FUNC_CACHE", str(tmp_path / "cache"))
    return tiny_fer2013(tmp_path / "fer2013.csv", (("Training", 128), ("PublicTest", 24), ("PrivateTest", 24)))


def run(tmp_path, *argv):
    out = tmp_path / "runs"
    assert cli.main(["--out", str(out), *argv]) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir, json.loads((run_dir / "results.json").read_text())


def count_view_passes(monkeypatch) -> list:
    passes = []
    original = Population.evaluate_views
    monkeypatch.setattr(Population, "evaluate_views",
                        lambda self, *a, **kw: passes.append(kw.get("tta")) or original(self, *a, **kw))
    return passes


def test_seeds_run_reports_each_configurations_seed_ensemble(tmp_path, csv, monkeypatch):
    passes = count_view_passes(monkeypatch)
    run_dir, res = run(tmp_path, "--experiment", "01", "--data", str(csv), "--seeds", "2", *QUICK,
                       "--set", "model.knobs.hidden=[16]")
    by_id = {v["id"]: v for v in res["variants"]}
    (e,) = res["ensembles"]
    assert e["members"] == ["mlp-s0", "mlp-s1"] and e["name"] == "mlp (seeds)"
    assert e["kind"] == "seeds" and e["split"] == "test" and e["tta"] is None and e["left_out"] == []
    assert e["member_acc"] == pytest.approx([by_id[m]["final"]["test_acc"] for m in e["members"]])
    assert passes == []  # no TTA: the probabilities came with finish's test pass
    assert sum(map(sum, e["confusion"])) == 24 and e["acc"] == pytest.approx(np.trace(e["confusion"]) / 24)
    summary = (run_dir / "summary.md").read_text()
    assert "## Ensembles" in summary and "| mlp (seeds) | 2 | — |" in summary
    assert json.loads((run_dir / "run.json").read_text())["ensembles"] == {}
    page = tmp_path / "results.md"  # the results page shows the same table
    assert results.main([str(run_dir), "--out", str(page)]) == 0 and "| mlp (seeds) | 2 | — |" in page.read_text()


def test_top_m_and_flip_tta_from_the_experiments_file(tmp_path, csv, monkeypatch, capsys):
    passes = count_view_passes(monkeypatch)
    path = tmp_path / "experiments.toml"
    path.write_text(TINY)
    run_dir, res = run(tmp_path, "--experiments", str(path), "--profile", "full", "--experiment", "tiny",
                       "--data", str(csv), *QUICK)
    (top,) = res["ensembles"]
    ranked = sorted(res["variants"], key=lambda v: -v["final"]["val_acc"])
    assert top["kind"] == "top" and top["name"] == "tiny (top 2 by val)"
    assert set(top["members"]) == {v["id"] for v in ranked[:2]}
    assert top["tta"] == "flip" and {"tta_acc", "tta_confusion", "tta_per_class", "tta_member_acc"} <= set(top)
    by_id = {v["id"]: v["final"] for v in res["variants"]}
    assert all(f["tta"] == "flip" and 0 <= f["tta_test_acc"] <= 1 for f in by_id.values())
    assert top["tta_member_acc"] == pytest.approx([by_id[m]["tta_test_acc"] for m in top["members"]])
    assert top["member_acc"] == pytest.approx([by_id[m]["test_acc"] for m in top["members"]])
    assert passes == ["flip"]  # one pass for the TTA setting; the plain probabilities came with finish
    summary = (run_dir / "summary.md").read_text()
    assert "| tiny (top 2 by val) | 2 | flip |" in summary and "## Test-time augmentation" in summary
    assert json.loads((run_dir / "run.json").read_text())["ensembles"] == {"tiny": {"ensemble": "top:2", "tta": "flip"}}

    path.write_text(TINY.replace('"top:2"', '"top:9"'))
    assert cli.main(["--out", str(tmp_path / "bad"), "--experiments", str(path), "--profile", "full",
                     "--experiment", "tiny", "--data", str(csv), *QUICK]) == 2
    assert "ensemble = 'top:9': M must be between 1 and the experiment's 3 variants" in capsys.readouterr().err
