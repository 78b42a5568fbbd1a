"""Ensembles and test-time augmentation (TTA) in a study run, measured on PrivateTest.

Which ensembles a run reports:

    --seeds N (N >= 2)        every configuration: the ensemble of its N seeds          (kind "seeds")
    ensemble = "seeds"        the same for that experiment; with one seed it says there is nothing to combine
    ensemble = "top:M"        that experiment's M variants of highest best-epoch val acc  (kind "top")
    tta = "flip"              that experiment's variants and ensembles also with TTA ("flip+shift": 6 views)

``ensemble`` and ``tta`` are keys of an experiment's table in experiments.toml, read here from the raw
table (the variant parser does not know them). Flow in run.py: :func:`settings` before training (a
mistake stops the run there; run.json keeps them for --resume), :func:`collect` after each
population's ``finish`` (whose PrivateTest pass gives the plain probabilities, plus one pass per TTA
setting through Population.evaluate_views, keeping only the probabilities of variants some ensemble
or TTA needs: 3,589 x 7 numbers each), and
:func:`measure` at the end, when every variant's validation accuracy is known for ``top:M``.

An ensemble's members are its variants that did not diverge (the rest are listed as ``left_out``).
Its prediction is the argmax of the members' mean softmax probability (with TTA: of the mean over
members of each member's mean over views). Gain = ensemble accuracy - mean member accuracy, in points.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from fer_func.config import ConfigError
from fer_func.population import views
from fer_func.study.stats import mean_ci

TTA_CHOICES = tuple(t for t in views.TTA_VIEWS if t is not None)


def config_label(variant_id: str) -> str:
    """A variant id without its seed: the configuration its seeds share (as report.summary_md groups)."""
    return re.sub(r"-s\d+$", "", variant_id)


# --- before training: the experiments' options ---------------------------------------------------

def settings(path, profile: str, variants) -> dict:
    """``{experiment: {"ensemble": str | None, "tta": str | None}}`` for the experiments of ``variants``
    that set either key in ``path`` (experiments.toml, with ``profile``'s overlays); checked."""
    from fer_func.study import experiments  # the parser; imported here as it imports the models

    path = Path(path)
    doc = experiments.read_toml(path, f"experiments file not found: {str(path)!r}; pass --experiments PATH",
                                path.name)
    tables, prof = doc.get("experiments", {}), experiments.profile_of(path, profile)
    counts = {}
    for v in variants:
        counts[v.experiment] = counts.get(v.experiment, 0) + 1
    out = {}
    for name, k in counts.items():
        table = prof.apply(name, tables.get(name, {}))
        chosen = {"ensemble": table.get("ensemble"), "tta": table.get("tta")}
        if chosen != {"ensemble": None, "tta": None}:
            out[name] = check(f"{path.name}: experiment {name!r}", chosen, k)
    return out


def check(where: str, chosen: dict, k: int) -> dict:
    """One experiment's ``ensemble``/``tta`` values, or a ConfigError naming the value and the choices."""
    ens, tta = chosen.get("ensemble"), chosen.get("tta")
    if ens is not None:
        m = top_m(ens)
        if ens != "seeds" and m is None:
            raise ConfigError(f"{where}: ensemble = {ens!r}: choose \"seeds\" (each configuration's seeds) or "
                              f"\"top:M\" (the M variants of best validation accuracy), e.g. ensemble = \"top:3\"")
        if m is not None and not 1 <= m <= k:
            raise ConfigError(f"{where}: ensemble = {ens!r}: M must be between 1 and the experiment's {k} variants "
                              f"in this run; lower M or add seeds (--seeds)")
    if tta is not None and tta not in TTA_CHOICES:
        raise ConfigError(f"{where}: tta = {tta!r}: choose one of {', '.join(map(repr, TTA_CHOICES))}, "
                          f"or leave the key out for no test-time augmentation")
    return {"ensemble": ens, "tta": tta}


def top_m(ensemble) -> int | None:
    """M of ``"top:M"``; None for anything else."""
    found = re.fullmatch(r"top:(\d+)", ensemble) if isinstance(ensemble, str) else None
    return int(found.group(1)) if found else None


# --- after each population: the probabilities the ensembles need -----------------------------------

def wanted(variants, chosen: dict) -> set[str]:
    """Ids of the variants whose PrivateTest probabilities some ensemble or TTA row needs."""
    from fer_func.study.experiments import variant_id

    ids = [variant_id(v) for v in variants]
    labels = [config_label(i) for i in ids]
    return {i for i, label, v in zip(ids, labels, variants)
            if labels.count(label) > 1 or v.experiment in chosen or v.cv}


def collect(pop, group, need: set[str], chosen: dict, store: dict, plain) -> None:
    """Put the best-epoch PrivateTest probabilities of ``group``'s variants in ``need`` into ``store``:
    ``store["probs"][id][None]`` (N, 7), and ``[tta]`` for an experiment with TTA; ``store["labels"]``.

    ``plain``: the best networks' test probabilities (K, N, 7) that the population's
    ``finish(with_probs=True)`` already computed; only a TTA setting needs a pass of its own."""
    from fer_func.study.experiments import variant_id

    ids = [variant_id(v) for v in group]
    rows = [i for i, vid in enumerate(ids) if vid in need]
    if not rows:
        return
    own = {i: store.setdefault("probs", {}).setdefault(ids[i], {}) for i in rows}
    for i in rows:
        own[i][None] = plain[i]
    for mode in sorted({chosen.get(group[i].experiment, {}).get("tta") for i in rows} - {None}):
        r = pop.evaluate_views("test", params=pop.best["params"], model_state=pop.best["model_state"], tta=mode)
        for i in rows:
            if chosen.get(group[i].experiment, {}).get("tta") == mode:
                own[i][mode] = r["tta_probs"][i]
    store["labels"] = pop.data.split("test")[1].cpu().numpy()


# --- at the end: the records of results.json -------------------------------------------------------

def measure(variants: list[dict], store: dict, chosen: dict) -> tuple[list[dict], dict]:
    """``(ensembles, tta)`` from the run's variant records and the collected probabilities.

    ``ensembles`` is results.json's section (one record per ensemble, accuracies as fractions);
    ``tta`` maps a variant id to ``{"tta", "tta_test_acc"}`` for its ``final``.
    """
    probs, labels = store.get("probs", {}), store.get("labels")
    done = [v for v in variants if v.get("final") and v["id"] in probs]
    out = []
    groups: dict[str, list] = {}
    for v in done:
        groups.setdefault(config_label(v["id"]), []).append(v)
    for label, vs in groups.items():
        if len(vs) > 1:
            out.append(_record(f"{label} (seeds)", "seeds", vs, probs, labels, chosen))
    cv: dict[str, list] = {}
    for v in done:
        if "fold" in v["hparams"]:
            cv.setdefault(cv_label(v["id"]), []).append(v)
    for label, vs in cv.items():
        rec = _record(f"{label} ({len({v['hparams']['fold'] for v in vs})}-fold CV)", "folds", vs, probs, labels,
                      chosen)
        rec["cv_val_acc"] = [_val(v) for v in vs]  # each fold's validation accuracy, on the fold it held out
        out.append(rec)
    for name, opts in chosen.items():
        m = top_m(opts.get("ensemble"))
        pool = [v for v in done if v["experiment"] == name]
        if m is not None and pool:
            ranked = sorted(range(len(pool)), key=lambda i: (pool[i]["diverged"], -_val(pool[i]), i))
            out.append(_record(f"{name} (top {m} by val)", "top", [pool[i] for i in sorted(ranked[:m])], probs,
                               labels, chosen))
    tta = {}
    for v in done:
        mode = chosen.get(v["experiment"], {}).get("tta")
        if mode is not None:
            acc = views.accuracy(probs[v["id"]][mode][None], labels)[0]
            tta[v["id"]] = {"tta": mode, "tta_test_acc": float(acc)}
    return out, tta


def cv_label(variant_id: str) -> str:
    """A cross-validation variant's id without fold and seed: the configuration its folds share."""
    label = re.sub(r"fold=\d+,?", "", config_label(variant_id)).replace(",]", "]")
    return label.replace("[]", "")


def notes(variants, chosen: dict) -> list[str]:
    """One line per ``ensemble = "seeds"`` that has nothing to combine (one seed per configuration)."""
    from fer_func.study.experiments import variant_id

    out = []
    for name, opts in chosen.items():
        labels = [config_label(variant_id(v)) for v in variants if v.experiment == name]
        if opts.get("ensemble") == "seeds" and labels and len(set(labels)) == len(labels):
            out.append(f"experiment {name!r}: ensemble = \"seeds\" with one seed per configuration: no ensemble "
                       f"to report; run with --seeds N (N >= 2)")
    return out


def _val(v) -> float:
    x = v["final"].get("val_acc")
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else -math.inf


def _record(name: str, kind: str, vs: list[dict], probs: dict, labels, chosen: dict) -> dict:
    members = [v for v in vs if not v["diverged"]] or vs  # all diverged: their best epochs, as the report does
    left_out = [v["id"] for v in vs if v not in members]
    experiment = vs[0]["experiment"]
    rec = {"name": name, "kind": kind, "experiment": experiment, "members": [v["id"] for v in members],
           "left_out": left_out, "split": "test", "tta": chosen.get(experiment, {}).get("tta")}
    for prefix, mode in [("", None)] + ([("tta_", rec["tta"])] if rec["tta"] else []):
        p = np.stack([probs[v["id"]][mode] for v in members])  # (M, N, 7)
        ens = views.ensemble(p, labels, range(len(members)))
        rec.update({f"{prefix}acc": ens["acc"], f"{prefix}confusion": ens["confusion"].tolist(),
                    f"{prefix}per_class": ens["per_class"],
                    f"{prefix}member_acc": views.accuracy(p, labels).tolist()})
    return rec


# --- the report -----------------------------------------------------------------------------------

def table(results: dict, confidence: float = 0.95) -> list[str]:
    """summary.md's "Ensembles" section (and results.md's): one row per ensemble, with and without TTA;
    and a per-variant TTA table where an experiment asked for it. No lines when the run has neither."""
    records = results.get("ensembles") or []
    tta_rows = [v for v in results["variants"] if (v.get("final") or {}).get("tta")]
    lines = []
    if records:
        lines += ["## Ensembles", "",
                  f"PrivateTest accuracy (%) of each ensemble (the members' softmax probabilities averaged; "
                  f"diverged members left out) beside its members: the best one, and the mean ± "
                  f"{100 * confidence:g}% CI over members; gain = ensemble - mean member, in points. A TTA row "
                  f"averages each network over test-time views first.", "",
                  "| ensemble | members | TTA | ensemble % | best member % | mean member % | gain pp |",
                  "|---|---|---|---|---|---|---|"]
        for r in records:
            for prefix, mode in [("", "—")] + ([("tta_", r["tta"])] if r.get("tta") else []):
                accs = r[f"{prefix}member_acc"]
                m, h = mean_ci(accs, confidence)
                lines.append(f"| {r['name']} | {len(r['members'])} | {mode} | {100 * r[f'{prefix}acc']:.2f} | "
                             f"{100 * max(accs):.2f} | {100 * m:.2f}" + (f" ± {100 * h:.2f}" if math.isfinite(h) else "")
                             + f" | {100 * (r[f'{prefix}acc'] - m):+.2f} |")
    folds = [r for r in records if r["kind"] == "folds"]
    if folds:
        lines += ([""] if lines else []) + [
            "## Cross-validation", "",
            f"k-fold CV on Training: each fold's network validates on the fold it held out (mean ± "
            f"{100 * confidence:g}% CI over folds and seeds), and the folds' networks together are one ensemble "
            f"on PrivateTest.", "",
            "| configuration | networks | CV val % | fold ensemble PrivateTest % | mean fold network PrivateTest % |",
            "|---|---|---|---|---|"]
        for r in folds:
            m, h = mean_ci(r["cv_val_acc"], confidence)
            mm, _ = mean_ci(r["member_acc"], confidence)
            lines.append(f"| {r['name']} | {len(r['members'])} | {100 * m:.2f}" + (f" ± {100 * h:.2f}" if math.isfinite(h)
                         else "") + f" | {100 * r['acc']:.2f} | {100 * mm:.2f} |")
    if tta_rows:
        lines += ([""] if lines else []) + [
            "## Test-time augmentation", "",
            "PrivateTest accuracy (%) of each variant's best-epoch network, as is and averaged over test-time views "
            "(flip: the image and its mirror; flip+shift: also shifted 2 pixels each way).", "",
            "| variant | TTA | PrivateTest % | with TTA % | gain pp |", "|---|---|---|---|---|"]
        for v in tta_rows:
            f = v["final"]
            lines.append(f"| {v['id']} | {f['tta']} | {100 * f['test_acc']:.2f} | {100 * f['tta_test_acc']:.2f} | "
                         f"{100 * (f['tta_test_acc'] - f['test_acc']):+.2f} |")
    return lines
