"""The original study's reported numbers and conclusions, each tested against a run's results.

Variants that differ only in seed form a :class:`Config`; each conclusion (a)-(m) of the study
(shared/reference/fer2013-study.md) is a comparison of Configs turned into a verdict by
fer_func.study.verdicts, with one line of evidence. The only numbers written here are the
original study's, the reference every row and conclusion is read against.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from fer_func.study.report import _finite
from fer_func.study.stats import mean_ci
from fer_func.study.verdicts import CLOSE, FAILS, HOLDS, NOISE, UNTESTED, Comparison, close, combine, compare

EXPERIMENT_IDS = {"mlp": "01", "simple_cnn": "02", "large_cnn": "03", "regularized_cnn": "04", "augmented_cnn": "05",
                  "resnet": "06", "tiny_cnn": "07", "lr": "08", "optimizer": "09", "batch_size": "10", "best": "11"}
ORIGINAL = {"mlp": {"val": 26}, "simple_cnn": {"val": 45}, "large_cnn": {"val": 38, "train": 92, "gap": 54},
            "regularized_cnn": {"val": 55, "gap": 15}, "augmented_cnn": {"val": 58, "gap": 12}, "resnet": {"val": 57},
            "tiny_cnn": {"val": 32, "train": 35}, "best": {"val": 62}}
ORIGINAL_OPTIMIZER = {"adam": 58, "adamw": 57, "rmsprop": 56, "sgd": 55}
ORIGINAL_BATCH = {16: 59, 64: 58, 256: 54}
ORIGINAL_LR = {0.1: "diverges", 0.001: "best", 0.0001: "converges ~20% slower"}
ORIGINAL_COSINE = "cosine slightly better than constant"
LR, SCHEDULE, OPTIMIZER, BATCH = "optimizer.lr", "schedule.name", "optimizer", "batch_size"
OVERFIT_GAP = 0.05   # "overfits" = train acc more than 5 points above val acc at the best epoch
FAIL_MARGIN = 0.05   # "fails" = val acc within 5 points of always guessing the majority class


@dataclass
class Config:
    """The variants of one experiment that share hyperparameters and differ only in seed."""
    experiment: str
    hparams: dict
    label: str                      # the variant id without its seed, e.g. lr[lr=0.01,schedule=cosine]
    variants: list = field(default_factory=list)

    @property
    def diverged(self) -> int:
        return sum(bool(v["diverged"]) for v in self.variants)

    def values(self, metric: str) -> dict[int, float]:
        """Seed -> ``final[metric]``, or ``epoch1_val``: the val acc after the first epoch; finite values only.

        A diverged seed counts with what its best epoch reached: a run keeps the best-epoch parameters,
        and leaving the seed out would flatter the setting that diverged.
        """
        out = {}
        for v in self.variants:
            if metric == "epoch1_val":
                x = v["epochs"][0].get("val_acc") if v["epochs"] else None
            else:
                x = v["final"].get(metric)
            if _finite(x):
                out[v["seed"]] = float(x)
        return out

    def mean(self, metric: str) -> tuple[float, float]:
        xs = list(self.values(metric).values())
        return mean_ci(xs) if xs else (math.nan, math.nan)


@dataclass(frozen=True)
class Conclusion:
    key: str
    claim: str
    original: str
    verdict: str
    evidence: str


def configurations(results: dict) -> list[Config]:
    """Finished variants grouped over seeds, in the study's order, grid points in the order they ran."""
    groups: dict[tuple, Config] = {}
    for v in results["variants"]:
        if not v.get("final"):
            continue  # unfinished (an interrupted run): counted in the header, left out of every number
        key = (v["experiment"], json.dumps(v["hparams"], sort_keys=True))
        groups.setdefault(key, Config(v["experiment"], v["hparams"], re.sub(r"-s\d+$", "", v["id"]))).variants.append(v)
    order = list(EXPERIMENT_IDS)
    return sorted(groups.values(), key=lambda c: order.index(c.experiment) if c.experiment in order else len(order))


def beats(a: Config, b: Config, metric: str = "val_acc", claim: str = ">") -> Comparison:
    """compare() on two Configs; a side left with no finite value because it diverged loses."""
    va, vb = a.values(metric), b.values(metric)
    if va and not vb and b.diverged:
        return Comparison(HOLDS if claim == ">" else FAILS, note=f"{b.label} diverged")
    if vb and not va and a.diverged:
        return Comparison(FAILS if claim == ">" else HOLDS, note=f"{a.label} diverged")
    return compare(va, vb, claim)


def conclusions(configs: list[Config], majority: float | None) -> list[Conclusion]:
    """The original study's conclusions (a)-(m), each with a computed verdict and one line of evidence."""
    def find(experiment, **hp):
        for c in configs:
            if c.experiment == experiment and all(_same(c.hparams.get(k), x) for k, x in hp.items()):
                return c
        return None

    def pct(c, metric="val_acc"):
        return _pct(*c.mean(metric)) + "%"

    exp = {name: find(name) for name in EXPERIMENT_IDS}

    def absent(*names):
        # A Finding saying which experiments the run lacks, or None when it has them all.
        gone = [n for n in names if exp[n] is None]
        if not gone:
            return None
        return Finding(UNTESTED, "this run has no " + ", ".join(f"{EXPERIMENT_IDS[n]} {n}" for n in gone))

    def spatial():
        c = beats(exp["simple_cnn"], exp["mlp"])
        return Finding(c.verdict, f"02 val {pct(exp['simple_cnn'])} vs 01 {pct(exp['mlp'])}: {c.text()}")

    def overfits(c: Config) -> Comparison:
        # The claims about 03 presuppose that it overfits; a 03 that never learned has no gap to close.
        gaps = c.values("gap")
        return compare(gaps, {s: OVERFIT_GAP for s in gaps})

    def regularization():
        reg, large = exp["regularized_cnn"], exp["large_cnn"]
        premise, c = overfits(large), beats(reg, large, "gap", "<")
        return Finding(combine([premise.verdict, c.verdict]),
                       f"03 overfits (gap above {100 * OVERFIT_GAP:.0f} pp): {premise.verdict}; "
                       f"gap 04 {pct(reg, 'gap')} vs 03 {pct(large, 'gap')}: {c.text()}")

    def augmentation():
        c = beats(exp["augmented_cnn"], exp["regularized_cnn"])
        return Finding(c.verdict, f"05 val {pct(exp['augmented_cnn'])} vs 04 {pct(exp['regularized_cnn'])}: {c.text()}")

    def largest_gain():
        val = {n: exp[n].values("val_acc") for n in ("large_cnn", "regularized_cnn", "augmented_cnn", "resnet")}
        aug = _sub(val["augmented_cnn"], val["regularized_cnn"])
        others = {"regularization (04-03)": _sub(val["regularized_cnn"], val["large_cnn"]),
                  "residual depth (06-04)": _sub(val["resnet"], val["regularized_cnn"])}
        if not aug or not all(others.values()):
            return Finding(UNTESTED, "03, 04, 05 and 06 share no seed, so per-seed gains cannot be formed")
        comps = {name: compare(aug, gain) for name, gain in others.items()}
        means = ", ".join(f"{name} {100 * sum(g.values()) / len(g):+.1f}"
                          for name, g in [("augmentation (05-04)", aug), *others.items()])
        return Finding(combine(c.verdict for c in comps.values()), f"mean gains {means} pp; augmentation minus "
                       + "; minus ".join(f"{name.split(' (')[0]}: {c.text()}" for name, c in comps.items()))

    def depth():
        # The claim is a negative one: it holds unless 06 is significantly better than 04.
        c = beats(exp["resnet"], exp["regularized_cnn"])
        v = {HOLDS: FAILS, UNTESTED: UNTESTED}.get(c.verdict, HOLDS)
        return Finding(v, f"06 val {pct(exp['resnet'])} vs 04 {pct(exp['regularized_cnn'])}: {c.text()}, "
                          f"{'significantly better' if c.verdict == HOLDS else 'not significantly better'}")

    def capacity():
        tiny, reg, large = exp["tiny_cnn"], exp["regularized_cnn"], exp["large_cnn"]
        parts = {"07 train below 04": beats(tiny, reg, "train_acc", "<"),
                 "07 val below 04": beats(tiny, reg, "val_acc", "<"),
                 "gap 03 above 04": beats(large, reg, "gap", ">"),
                 f"03 overfits (gap above {100 * OVERFIT_GAP:.0f} pp)": overfits(large)}
        return Finding(combine(c.verdict for c in parts.values()),
                       f"07 train/val {pct(tiny, 'train_acc')}/{pct(tiny)}, 04 {pct(reg, 'train_acc')}/{pct(reg)}, "
                       f"gap 03 {pct(large, 'gap')} vs 04 {pct(reg, 'gap')}; "
                       + "; ".join(f"{name} {c.verdict}: {c.text()}" for name, c in parts.items()))

    lr_configs = [c for c in configs if c.experiment == "lr" and LR in c.hparams]
    schedules = list(dict.fromkeys(c.hparams.get(SCHEDULE) for c in lr_configs))

    def lr_point(rate, schedule):
        return find("lr", **{LR: rate, SCHEDULE: schedule})

    def fast_lr():
        fast = [c for c in lr_configs if _same(c.hparams[LR], 0.1)]
        if not fast:
            return Finding(UNTESTED, "08 has no lr 0.1 point")
        floor = majority if majority is not None else 0.25  # the study's "~25%" when no confusion matrix is stored
        runs = [v for c in fast for v in c.variants]
        failed = sum(v["diverged"] or not _finite(v["final"].get("val_acc"))
                     or v["final"]["val_acc"] < floor + FAIL_MARGIN for v in runs)
        total = len(runs)
        parts = [f"{c.hparams.get(SCHEDULE, '')}: {c.diverged}/{len(c.variants)} diverged, best val {pct(c)}"
                 for c in fast]
        v = HOLDS if failed == total else FAILS if failed == 0 else NOISE
        return Finding(v, f"{failed}/{total} lr 0.1 runs diverged or ended below {100 * (floor + FAIL_MARGIN):.1f}% "
                          f"(majority class {100 * floor:.1f}% + {100 * FAIL_MARGIN:.0f} pp); " + "; ".join(parts))

    def best_lr():
        verdicts, parts = [], []
        for s in schedules:
            mine = lr_point(0.001, s)
            others = [c for c in lr_configs if c.hparams.get(SCHEDULE) == s and c is not mine]
            if mine is None or not others:
                continue
            verdicts.append(combine(beats(mine, o).verdict for o in others))
            rival = max(others, key=lambda o: _nan_low(o.mean("val_acc")[0]))
            parts.append(f"{s}: 0.001 {pct(mine)}, best other rate {rival.hparams[LR]:g} {pct(rival)}, "
                         f"{beats(mine, rival).text()}: {verdicts[-1]}")
        if not verdicts:
            return Finding(UNTESTED, "08 lacks lr 0.001 or a second rate under one schedule")
        return Finding(combine(verdicts), "; ".join(parts))

    def cosine():
        cos, const = lr_point(0.001, "cosine"), lr_point(0.001, "constant")
        if cos is None or const is None:
            return Finding(UNTESTED, "08 lacks cosine or constant at lr 0.001")
        c = beats(cos, const)
        return Finding(c.verdict, f"lr 0.001 cosine {pct(cos)} vs constant {pct(const)}: {c.text()}")

    def slow_lr():
        s = "constant" if "constant" in schedules else next(iter(schedules), None)
        slow, base = lr_point(0.0001, s), lr_point(0.001, s)
        if slow is None or base is None:
            return Finding(UNTESTED, "08 lacks lr 0.0001 or 0.001")
        c = beats(slow, base, "epoch1_val", "<")
        return Finding(c.verdict, f"val acc after epoch 1 ({s}): 0.0001 {pct(slow, 'epoch1_val')} vs 0.001 "
                                  f"{pct(base, 'epoch1_val')}: {c.text()}")

    def adam():
        opts = [c for c in configs if c.experiment == "optimizer" and OPTIMIZER in c.hparams]
        mine = next((c for c in opts if c.hparams[OPTIMIZER] == "adam"), None)
        if mine is None or len(opts) < 2:
            return Finding(UNTESTED, "09 lacks adam or a second optimizer")
        comps = [(o, beats(mine, o)) for o in opts if o is not mine]
        return Finding(combine(c.verdict for _, c in comps), f"adam {pct(mine)}; " + "; ".join(
            f"vs {o.hparams[OPTIMIZER]} {pct(o)}: {c.text()}" for o, c in comps))

    def batch():
        sizes = {int(c.hparams[BATCH]): c for c in configs if c.experiment == "batch_size" and BATCH in c.hparams}
        verdicts, parts = [], []
        if 16 in sizes and len(sizes) > 1:
            verdicts.append(combine(beats(sizes[16], c).verdict for b, c in sizes.items() if b != 16))
            parts.append(f"16 above every other size: {verdicts[-1]}")
        if 256 in sizes and len(sizes) > 1:
            verdicts.append(combine(beats(sizes[256], c, claim="<").verdict for b, c in sizes.items() if b != 256))
            parts.append(f"256 below every other size: {verdicts[-1]}")
        if 16 in sizes and 64 in sizes:
            c = close(sizes[64].values("val_acc"), sizes[16].values("val_acc"))
            verdicts.append(c.verdict)
            parts.append(f"64 within ±{100 * CLOSE:.0f} pp of 16 {c.verdict}: {c.text()}")
        if not verdicts:
            return Finding(UNTESTED, "10 lacks batch 16, 64 or 256")
        means = ", ".join(f"{b}: {pct(c)}" for b, c in sorted(sizes.items()))
        return Finding(combine(verdicts), f"val {means}; " + "; ".join(parts))

    def combined():
        c = beats(exp["best"], exp["augmented_cnn"])
        ranked = sorted(configs, key=lambda x: _nan_low(x.mean("val_acc")[0]), reverse=True)
        return Finding(c.verdict, f"11 val {pct(exp['best'])} vs 05 {pct(exp['augmented_cnn'])}: {c.text()}; "
                                  f"11 ranks {ranked.index(exp['best']) + 1} of {len(configs)} configurations "
                                  f"by mean val acc")

    def dropout_decay():
        varied = sorted({k for c in configs for k in c.hparams if "dropout" in k or "weight_decay" in k})
        return Finding(UNTESTED, "no experiment varies dropout or weight decay" if not varied else
                       f"varied here ({', '.join(varied)}) but no rule on this page reads it")

    def o(name, key="val"):
        return ORIGINAL[name][key]

    gains = {"aug": o("augmented_cnn") - o("regularized_cnn"), "reg": o("regularized_cnn") - o("large_cnn"),
             "depth": o("resnet") - o("regularized_cnn")}
    claims = [  # key, claim, the original's numbers, the experiments it needs, the test
        ("a", "Spatial features matter: 02 simple CNN > 01 MLP", f"{o('simple_cnn')} vs {o('mlp')}",
         ("simple_cnn", "mlp"), spatial),
        ("b", "Regularization closes the gap: 03 overfits (gap above 5 pp) and gap(04) < gap(03)",
         f"gap {o('regularized_cnn', 'gap')} vs {o('large_cnn', 'gap')}", ("regularized_cnn", "large_cnn"),
         regularization),
        ("c", "Augmentation helps: 05 > 04", f"{o('augmented_cnn')} vs {o('regularized_cnn')}",
         ("augmented_cnn", "regularized_cnn"), augmentation),
        ("c′", "Augmentation is the largest single gain (vs regularization 04-03 and residual depth 06-04)",
         f"claimed; its numbers give {gains['aug']:+} vs {gains['reg']:+} and {gains['depth']:+}",
         ("augmented_cnn", "regularized_cnn", "large_cnn", "resnet"), largest_gain),
        ("d", "Depth has diminishing returns: 06 ResNet not better than 04",
         f"{o('resnet')} vs {o('regularized_cnn')}", ("resnet", "regularized_cnn"), depth),
        ("e", "Capacity must match the task: 07 underfits (train and val below 04), 03 overfits (gap above 5 pp and above 04)",
         f"07 train {o('tiny_cnn', 'train')}, val {o('tiny_cnn')}; gap {o('large_cnn', 'gap')} vs "
         f"{o('regularized_cnn', 'gap')}", ("tiny_cnn", "regularized_cnn", "large_cnn"), capacity),
        ("f", "lr 0.1 diverges or fails (near the majority-class rate)", ORIGINAL_LR[0.1], ("lr",), fast_lr),
        ("g", "lr 0.001 is the best rate (under each schedule)", ORIGINAL_LR[0.001], ("lr",), best_lr),
        ("h", "Cosine slightly better than constant at lr 0.001", ORIGINAL_COSINE, ("lr",), cosine),
        ("i", "lr 0.0001 converges slower: lower val acc than 0.001 after epoch 1", ORIGINAL_LR[0.0001], ("lr",),
         slow_lr),
        ("j", "Adam is the best optimizer of 09", ", ".join(f"{name} {acc}" for name, acc in sorted(
            ORIGINAL_OPTIMIZER.items(), key=lambda t: -t[1])), ("optimizer",), adam),
        ("k", "Batch 16 best, 256 worst, 64 close to 16",
         ", ".join(f"{b}: {acc}" for b, acc in sorted(ORIGINAL_BATCH.items())), ("batch_size",), batch),
        ("l", "The best combined configuration (11) beats 05", f"{o('best')} vs {o('augmented_cnn')}",
         ("best", "augmented_cnn"), combined),
        ("m", "Dropout 0.2/0.5 and weight decay 1e-3 are optimal", "stated, not measured", (), dropout_decay),
    ]
    out = []
    for key, claim, original, needs, test in claims:
        found = absent(*needs) or test()
        out.append(Conclusion(key, claim, original, found.verdict, found.evidence))
    return out


@dataclass(frozen=True)
class Finding:
    verdict: str
    evidence: str


def _sub(a: dict, b: dict) -> dict:
    return {s: a[s] - b[s] for s in set(a) & set(b)}


def _same(x, y) -> bool:
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
        return math.isclose(x, y, rel_tol=1e-9)
    return x == y


def _nan_low(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _pct(mean: float, half: float) -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{100 * mean:.1f}" + (f" ± {100 * half:.1f}" if math.isfinite(half) else "")


def majority_rate(results: dict) -> float | None:
    """Share of the largest class in the split the confusion matrices count (PrivateTest; rows = true class)."""
    for v in results["variants"]:
        cm = (v.get("final") or {}).get("confusion")
        if cm:
            rows = [sum(r) for r in cm]
            return max(rows) / sum(rows) if sum(rows) else None
    return None


def reference(c: Config) -> str:
    """The original study's reported number for a row, in percent, or what it said without one."""
    if c.experiment in ORIGINAL:
        o = ORIGINAL[c.experiment]
        extra = [f"{k} {o[k]}" for k in ("train", "gap") if k in o]
        return f"{o['val']}" + (f" ({', '.join(extra)})" if extra else "")
    if c.experiment == "optimizer":
        return str(ORIGINAL_OPTIMIZER.get(c.hparams.get(OPTIMIZER), "—"))
    if c.experiment == "batch_size":
        return str(ORIGINAL_BATCH.get(int(c.hparams.get(BATCH, 0)), "—"))
    if c.experiment == "lr":
        text = next((text for r, text in ORIGINAL_LR.items() if _same(c.hparams.get(LR), r)), "—")
        cosine_best = _same(c.hparams.get(LR), 0.001) and c.hparams.get(SCHEDULE) == "cosine"
        return f"{text}; {ORIGINAL_COSINE}" if cosine_best else text
    return "—"


def reference_val(c: Config) -> float | None:
    if c.experiment in ORIGINAL:
        return ORIGINAL[c.experiment]["val"]
    if c.experiment == "optimizer":
        return ORIGINAL_OPTIMIZER.get(c.hparams.get(OPTIMIZER))
    if c.experiment == "batch_size":
        return ORIGINAL_BATCH.get(int(c.hparams.get(BATCH, 0)))
    return None
