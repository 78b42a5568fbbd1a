"""Write tests/known_answers/*.json: reference outputs of jax.random, sklearn and scipy for CI.

CI installs none of those packages, so the live cross-checks in tests/test_prng.py and
tests/test_report.py skip there. These files freeze the references' answers (inputs, outputs and
the versions that produced them), and the known-answer tests check fer_func against them on every
run. Needs jax, scikit-learn and scipy (not dependencies of fer-func); rerun only to refresh:

    pip install 'jax[cpu]' scikit-learn scipy && python scripts/make_known_answers.py

Deliberately imports nothing from fer_func: the answers come from the references alone.
"""
import datetime
import json
import platform
import re
from importlib.metadata import version
from pathlib import Path

import jax
import numpy as np
import scipy.stats
from sklearn.metrics import precision_recall_fscore_support

OUT = Path(__file__).resolve().parents[1] / "tests" / "known_answers"


def produced_by(*packages):
    return {"script": "scripts/make_known_answers.py", "date": datetime.date.today().isoformat(),
            "versions": {"python": platform.python_version(), **{p: version(p) for p in ("numpy", *packages)}}}


def jax_answers():
    # fer_func.prng uses the partitionable Threefry layout; jax's default layout differs.
    jax.config.update("jax_threefry_partitionable", True)
    keys = {}
    for seed in (0, 42, 2**32 - 1):
        keys[str(seed)] = np.asarray(jax.random.PRNGKey(seed)).tolist()
    # Without x64 jax drops a seed's high word (PRNGKey(2**32 + 5) == PRNGKey(5)); with it jax
    # splits the seed into two words as prng.key does, up to 2**63 - 1 (jax takes int64 seeds).
    with jax.enable_x64(True):
        for seed in (2**32 + 5, 2**63 - 1):
            keys[str(seed)] = np.asarray(jax.random.PRNGKey(seed)).tolist()

    def draws(words):
        k = np.asarray(words, dtype=np.uint32)  # a raw uint32[2] key, as PRNGKey returns
        return {"key": words,
                "split_5": np.asarray(jax.random.split(k, 5)).tolist(),
                "fold_in": {str(d): np.asarray(jax.random.fold_in(k, d)).tolist() for d in (0, 1, 7, 2**32 - 1)},
                "bits_3x11": np.asarray(jax.random.bits(k, (3, 11))).tolist(),
                # float32 values: exact as JSON doubles, so the test can compare bit for bit
                "uniform_64": np.asarray(jax.random.uniform(k, (64,)), dtype=np.float64).tolist(),
                "normal_64": np.asarray(jax.random.normal(k, (64,)), dtype=np.float64).tolist()}

    # permutation is not here: jax shuffles by rounds of sorts, prng.permutation by one argsort.
    return {"produced_by": {**produced_by("jax", "jaxlib"), "jax_threefry_partitionable": True,
                            "jax_enable_x64": "only for PRNGKey of seeds >= 2**32"},
            "prng_key": keys,
            "draws": [draws(keys["42"]), draws(keys[str(2**32 + 5)])]}


def sklearn_answers():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 7, 60), rng.integers(0, 7, 60)
    y_true[y_true == 5] = 2   # class 5 never present
    y_pred[y_pred == 3] = 0   # class 3 never predicted
    y_true[y_true == 6] = 1   # class 6 neither present nor predicted
    y_pred[y_pred == 6] = 4
    correct = [9, 1, 5, 10, 6, 8, 7]  # tests/test_report.py's confusion(): misses predicted as class 6
    cases = {"random_with_absent_classes": (y_true.tolist(), y_pred.tolist()),
             "live_test_confusion": ([k for k in range(7) for _ in range(10)],
                                     [k if i < correct[k] else 6 for k in range(7) for i in range(10)]),
             "no_hits_for_present_predicted_class": ([0, 0, 1, 1, 2], [1, 1, 0, 2, 2])}
    out = {}
    for name, (t, p) in cases.items():
        prec, rec, f1, _ = precision_recall_fscore_support(t, p, labels=range(7), zero_division=0)
        out[name] = {"y_true": t, "y_pred": p, "precision": prec.tolist(), "recall": rec.tolist(), "f1": f1.tolist()}
    return {"produced_by": {**produced_by("scikit-learn"),
                            "call": "precision_recall_fscore_support(y_true, y_pred, labels=range(7), zero_division=0)"},
            "cases": out}


def scipy_answers():
    dfs = [1, 2, 3, 4, 5, 7, 9, 10, 30, 50, 100, 301]
    return {"produced_by": {**produced_by("scipy"), "call": "scipy.stats.t.ppf((1 + confidence) / 2, df)"},
            "df": dfs,
            "t_by_confidence": {str(c): [float(scipy.stats.t.ppf((1 + c) / 2, df)) for df in dfs]
                                for c in (0.9, 0.95, 0.99)}}


def dump(obj) -> str:
    # one line per innermost list keeps the files short and their diffs readable
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, answers in [("jax_random", jax_answers), ("sklearn_per_class", sklearn_answers),
                          ("scipy_t_quantile", scipy_answers)]:
        path = OUT / f"{name}.json"
        path.write_text(dump(answers()))
        print(f"wrote {path} ({path.stat().st_size} bytes)")
