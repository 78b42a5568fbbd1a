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
from fer_func.study.plateau import Plateau, last_trained, plateau
from fer_func.study.verdicts import (CLOSE, FAILS, HOLDS, NOISE, NOT_CONVERGED, UNTESTED, Comparison, close, combine,
                                      compare)

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
OVERFIT_GAP = 0.05   # "overfits" = train acc more than 5 points above val acc at the last epoch trained
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

    @property
    def plateau(self) -> Plateau:
        """Whether these seeds finished learning (plateau.py)."""
        return plateau(self.variants)

    def values(self, metric: str) -> dict[int, float]:
        """Seed -> ``final[metric]``; ``epoch1_val``: the val acc after the first epoch; ``last_gap``: train
        minus val acc at the last epoch the seed trained (plateau.last_trained); finite values only.

        A diverged seed counts with what its best epoch reached: a run keeps the best-epoch parameters,
        and leaving the seed out would flatter the setting that diverged.
        """
        out = {}
        for v in self.variants:
            if metric == "epoch1_val":
                x = v["epochs"][0].get("val_acc") if v["epochs"] else None
            elif metric == "last_gap":
                last = last_trained(v)
                x = None if last is None else _difference(last.get("train_acc"), last.get("val_acc"))
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


class Study:
    """What a claim's test reads: the run's Configs, found by experiment and hyperparameters. Every
    Config a test asks for is remembered, so a verdict can say which rows it rests on."""

    def __init__(self, configs: list[Config], majority: float | None):
        self.configs, self.majority, self.used = configs, majority, []

    def find(self, experiment: str, **hp) -> Config | None:
        for c in self.configs:
            if c.experiment == experiment and all(_same(c.hparams.get(k), x) for k, x in hp.items()):
                self.used.append(c)
                return c
        return None

    def exp(self, name: str) -> Config | None:
        return self.find(name)

    def grid(self, experiment: str, key: str, use: bool = True) -> list[Config]:
        """The configurations of a study that set ``key``, in the order they ran; ``use=False`` when the
        claim rests on only some of them (it passes those to :meth:`use`)."""
        found = [c for c in self.configs if c.experiment == experiment and key in c.hparams]
        if use:
            self.use(*found)
        return found

    def use(self, *configs: Config):
        self.used.extend(configs)


def pct(c: Config, metric: str = "val_acc") -> str:
    return _pct(*c.mean(metric)) + "%"


def overfits(c: Config) -> Comparison:
    """03's overfitting, the premise of (b) and (e): its train-val gap at the last epoch it trained is
    above OVERFIT_GAP. The last epoch, not the best one: overfitting is what training past the
    validation peak does, and the original reports the end of training (92% train, 38% val)."""
    gaps = c.values("last_gap")
    return compare(gaps, {s: OVERFIT_GAP for s in gaps})


OVERFITS = f"03 overfits (last-epoch gap above {100 * OVERFIT_GAP:.0f} pp)"


def spatial(s: Study) -> Finding:
    cnn, mlp = s.exp("simple_cnn"), s.exp("mlp")
    c = beats(cnn, mlp)
    return Finding(c.verdict, f"02 val {pct(cnn)} vs 01 {pct(mlp)}: {c.text()}")


def regularization(s: Study) -> Finding:
    reg, large = s.exp("regularized_cnn"), s.exp("large_cnn")
    premise, c = overfits(large), beats(reg, large, "last_gap", "<")
    return Finding(combine([premise.verdict, c.verdict]),
                   f"{OVERFITS}: {premise.verdict}; last-epoch gap 04 {pct(reg, 'last_gap')} vs 03 "
                   f"{pct(large, 'last_gap')}: {c.text()}")


def augmentation(s: Study) -> Finding:
    aug, reg = s.exp("augmented_cnn"), s.exp("regularized_cnn")
    c = beats(aug, reg)
    return Finding(c.verdict, f"05 val {pct(aug)} vs 04 {pct(reg)}: {c.text()}")


def largest_gain(s: Study) -> Finding:
    val = {n: s.exp(n).values("val_acc") for n in ("large_cnn", "regularized_cnn", "augmented_cnn", "resnet")}
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


def depth(s: Study) -> Finding:
    # The claim is a negative one: it holds unless 06 is significantly better than 04.
    resnet, reg = s.exp("resnet"), s.exp("regularized_cnn")
    c = beats(resnet, reg)
    v = {HOLDS: FAILS, UNTESTED: UNTESTED}.get(c.verdict, HOLDS)
    return Finding(v, f"06 val {pct(resnet)} vs 04 {pct(reg)}: {c.text()}, "
                      f"{'significantly better' if c.verdict == HOLDS else 'not significantly better'}")


def capacity(s: Study) -> Finding:
    tiny, reg, large = s.exp("tiny_cnn"), s.exp("regularized_cnn"), s.exp("large_cnn")
    parts = {"07 train below 04": beats(tiny, reg, "train_acc", "<"),
             "07 val below 04": beats(tiny, reg, "val_acc", "<"),
             "last-epoch gap 03 above 04": beats(large, reg, "last_gap", ">"),
             OVERFITS: overfits(large)}
    return Finding(combine(c.verdict for c in parts.values()),
                   f"07 train/val {pct(tiny, 'train_acc')}/{pct(tiny)}, 04 {pct(reg, 'train_acc')}/{pct(reg)}, "
                   f"last-epoch gap 03 {pct(large, 'last_gap')} vs 04 {pct(reg, 'last_gap')}; "
                   + "; ".join(f"{name} {c.verdict}: {c.text()}" for name, c in parts.items()))


def _schedules(s: Study) -> list:
    return list(dict.fromkeys(c.hparams.get(SCHEDULE) for c in s.grid("lr", LR, use=False)))


def fast_lr(s: Study) -> Finding:
    fast = [c for c in s.grid("lr", LR, use=False) if _same(c.hparams[LR], 0.1)]
    s.use(*fast)
    if not fast:
        return Finding(UNTESTED, "08 has no lr 0.1 point")
    floor = s.majority if s.majority is not None else 0.25  # the study's "~25%" when no confusion matrix is stored
    runs = [v for c in fast for v in c.variants]
    failed = sum(v["diverged"] or not _finite(v["final"].get("val_acc"))
                 or v["final"]["val_acc"] < floor + FAIL_MARGIN for v in runs)
    parts = [f"{c.hparams.get(SCHEDULE, '')}: {c.diverged}/{len(c.variants)} diverged, best val {pct(c)}" for c in fast]
    v = HOLDS if failed == len(runs) else FAILS if failed == 0 else NOISE
    return Finding(v, f"{failed}/{len(runs)} lr 0.1 runs diverged or ended below {100 * (floor + FAIL_MARGIN):.1f}% "
                      f"(majority class {100 * floor:.1f}% + {100 * FAIL_MARGIN:.0f} pp); " + "; ".join(parts))


def best_lr(s: Study) -> Finding:
    verdicts, parts = [], []
    for schedule in _schedules(s):
        mine = s.find("lr", **{LR: 0.001, SCHEDULE: schedule})
        others = [c for c in s.grid("lr", LR) if c.hparams.get(SCHEDULE) == schedule and c is not mine]
        if mine is None or not others:
            continue
        verdicts.append(combine(beats(mine, o).verdict for o in others))
        rival = max(others, key=lambda o: _nan_low(o.mean("val_acc")[0]))
        parts.append(f"{schedule}: 0.001 {pct(mine)}, best other rate {rival.hparams[LR]:g} {pct(rival)}, "
                     f"{beats(mine, rival).text()}: {verdicts[-1]}")
    if not verdicts:
        return Finding(UNTESTED, "08 lacks lr 0.001 or a second rate under one schedule")
    return Finding(combine(verdicts), "; ".join(parts))


def cosine(s: Study) -> Finding:
    cos, const = s.find("lr", **{LR: 0.001, SCHEDULE: "cosine"}), s.find("lr", **{LR: 0.001, SCHEDULE: "constant"})
    if cos is None or const is None:
        return Finding(UNTESTED, "08 lacks cosine or constant at lr 0.001")
    c = beats(cos, const)
    return Finding(c.verdict, f"lr 0.001 cosine {pct(cos)} vs constant {pct(const)}: {c.text()}")


def slow_lr(s: Study) -> Finding:
    schedules = _schedules(s)
    schedule = "constant" if "constant" in schedules else next(iter(schedules), None)
    slow, base = s.find("lr", **{LR: 0.0001, SCHEDULE: schedule}), s.find("lr", **{LR: 0.001, SCHEDULE: schedule})
    if slow is None or base is None:
        return Finding(UNTESTED, "08 lacks lr 0.0001 or 0.001")
    c = beats(slow, base, "epoch1_val", "<")
    return Finding(c.verdict, f"val acc after epoch 1 ({schedule}): 0.0001 {pct(slow, 'epoch1_val')} vs 0.001 "
                              f"{pct(base, 'epoch1_val')}: {c.text()}")


def adam(s: Study) -> Finding:
    opts = s.grid("optimizer", OPTIMIZER)
    mine = next((c for c in opts if c.hparams[OPTIMIZER] == "adam"), None)
    if mine is None or len(opts) < 2:
        return Finding(UNTESTED, "09 lacks adam or a second optimizer")
    comps = [(o, beats(mine, o)) for o in opts if o is not mine]
    return Finding(combine(c.verdict for _, c in comps), f"adam {pct(mine)}; " + "; ".join(
        f"vs {o.hparams[OPTIMIZER]} {pct(o)}: {c.text()}" for o, c in comps))


def batch(s: Study) -> Finding:
    sizes = {int(c.hparams[BATCH]): c for c in s.grid("batch_size", BATCH)}
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


def combined(s: Study) -> Finding:
    best, aug = s.exp("best"), s.exp("augmented_cnn")
    c = beats(best, aug)
    ranked = sorted(s.configs, key=lambda x: _nan_low(x.mean("val_acc")[0]), reverse=True)
    return Finding(c.verdict, f"11 val {pct(best)} vs 05 {pct(aug)}: {c.text()}; 11 ranks {ranked.index(best) + 1} "
                              f"of {len(s.configs)} configurations by mean val acc")


def dropout_decay(s: Study) -> Finding:
    varied = sorted({k for c in s.configs for k in c.hparams if "dropout" in k or "weight_decay" in k})
    return Finding(UNTESTED, "no experiment varies dropout or weight decay" if not varied else
                   f"varied here ({', '.join(varied)}) but no rule on this page reads it")


def _o(name, key="val"):
    return ORIGINAL[name][key]


@dataclass(frozen=True)
class Claim:
    key: str
    claim: str
    original: str       # the original study's numbers for it
    needs: tuple        # the experiments a run must have for the claim to be tested
    test: object        # Study -> Finding


_GAINS = {"aug": _o("augmented_cnn") - _o("regularized_cnn"), "reg": _o("regularized_cnn") - _o("large_cnn"),
          "depth": _o("resnet") - _o("regularized_cnn")}
CLAIMS = [
    Claim("a", "Spatial features matter: 02 simple CNN > 01 MLP", f"{_o('simple_cnn')} vs {_o('mlp')}",
          ("simple_cnn", "mlp"), spatial),
    Claim("b", "Regularization closes the gap: 03 overfits (last-epoch gap above 5 pp) and its gap exceeds 04's",
          f"gap {_o('regularized_cnn', 'gap')} vs {_o('large_cnn', 'gap')}", ("regularized_cnn", "large_cnn"),
          regularization),
    Claim("c", "Augmentation helps: 05 > 04", f"{_o('augmented_cnn')} vs {_o('regularized_cnn')}",
          ("augmented_cnn", "regularized_cnn"), augmentation),
    Claim("c′", "Augmentation is the largest single gain (vs regularization 04-03 and residual depth 06-04)",
          f"claimed; its numbers give {_GAINS['aug']:+} vs {_GAINS['reg']:+} and {_GAINS['depth']:+}",
          ("augmented_cnn", "regularized_cnn", "large_cnn", "resnet"), largest_gain),
    Claim("d", "Depth has diminishing returns: 06 ResNet not better than 04",
          f"{_o('resnet')} vs {_o('regularized_cnn')}", ("resnet", "regularized_cnn"), depth),
    Claim("e", "Capacity must match the task: 07 underfits (train and val below 04), 03 overfits (last-epoch gap "
               "above 5 pp and above 04)",
          f"07 train {_o('tiny_cnn', 'train')}, val {_o('tiny_cnn')}; gap {_o('large_cnn', 'gap')} vs "
          f"{_o('regularized_cnn', 'gap')}", ("tiny_cnn", "regularized_cnn", "large_cnn"), capacity),
    Claim("f", "lr 0.1 diverges or fails (near the majority-class rate)", ORIGINAL_LR[0.1], ("lr",), fast_lr),
    Claim("g", "lr 0.001 is the best rate (under each schedule)", ORIGINAL_LR[0.001], ("lr",), best_lr),
    Claim("h", "Cosine slightly better than constant at lr 0.001", ORIGINAL_COSINE, ("lr",), cosine),
    Claim("i", "lr 0.0001 converges slower: lower val acc than 0.001 after epoch 1", ORIGINAL_LR[0.0001], ("lr",),
          slow_lr),
    Claim("j", "Adam is the best optimizer of 09", ", ".join(f"{name} {acc}" for name, acc in sorted(
        ORIGINAL_OPTIMIZER.items(), key=lambda t: -t[1])), ("optimizer",), adam),
    Claim("k", "Batch 16 best, 256 worst, 64 close to 16",
          ", ".join(f"{b}: {acc}" for b, acc in sorted(ORIGINAL_BATCH.items())), ("batch_size",), batch),
    Claim("l", "The best combined configuration (11) beats 05", f"{_o('best')} vs {_o('augmented_cnn')}",
          ("best", "augmented_cnn"), combined),
    Claim("m", "Dropout 0.2/0.5 and weight decay 1e-3 are optimal", "stated, not measured", (), dropout_decay),
]


def conclusions(configs: list[Config], majority: float | None) -> list[Conclusion]:
    """The original study's conclusions (a)-(m), each with a computed verdict and one line of evidence.

    A verdict drawn from a row that had not reached its plateau (plateau.py) measures under-training,
    so it reads NOT_CONVERGED, naming the rows, whatever the numbers say.
    """
    out = []
    for claim in CLAIMS:
        study = Study(configs, majority)
        gone = [n for n in claim.needs if study.exp(n) is None]
        if gone:
            found = Finding(UNTESTED, "this run has no " + ", ".join(f"{EXPERIMENT_IDS[n]} {n}" for n in gone))
        else:
            study.used.clear()
            found = claim.test(study)
            early = list(dict.fromkeys(c.label for c in study.used if not c.plateau.reached))
            if early and found.verdict != UNTESTED:
                found = Finding(NOT_CONVERGED, f"rests on rows still learning at their epoch cap ({', '.join(early)}); "
                                               f"the numbers would say {found.verdict}: {found.evidence}")
        out.append(Conclusion(claim.key, claim.claim, claim.original, found.verdict, found.evidence))
    return out


@dataclass(frozen=True)
class Finding:
    verdict: str
    evidence: str


def _difference(a, b) -> float | None:
    return a - b if _finite(a) and _finite(b) else None


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
