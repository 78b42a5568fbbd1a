"""A ``--search`` run's best trial as an export Member (source.py hands search runs here).

A search keeps no per-population best weights: ``checkpoints/search.pt`` holds the driver's state,
and the Optuna driver keeps the best finished trial's best-epoch weights there as its ``champion``
(fer_func/search/trials.py), since that trial's slot goes on to train others. PBT never refills a
slot, so its best member is the slot with the highest best-epoch validation accuracy in the
population's own ``best`` state. The trial's configuration is rebuilt from run.json exactly as the
search built it (``search.run.Setup``), so the exported architecture is the trained one.
"""
from __future__ import annotations

import json
from pathlib import Path

from fer_func.config import ConfigError
from fer_func.models import build_from
from fer_func.study import checkpoint
from fer_func.use.errors import UseError
from fer_func.use.member import Member


def _setup(run_dir: Path):
    from fer_func.search.run import Setup, _resolve
    from fer_func.study.options import RunOptions

    try:
        return Setup(_resolve(RunOptions(resume=run_dir, device="cpu")))
    except (ConfigError, OSError, KeyError, TypeError) as e:
        raise UseError(f"{run_dir}: cannot rebuild the search's configuration from run.json ({e}); export it with "
                       f"the fer_func version and experiments file that ran it") from None


def best(run_dir: Path, which: str):
    """``[Member]`` of the best trial (Optuna) or member (PBT) of the search in ``run_dir``."""
    if which != "best":
        raise UseError(f"--variant {which!r}: {run_dir} is a --search run, which keeps only its best trial's "
                       f"weights; export it with --variant best (the default)")
    path = run_dir / "checkpoints" / "search.pt"
    if not path.is_file():
        raise UseError(f"{path}: missing; the search has not finished an epoch yet "
                       f"(continue it with `python runner.py --resume {run_dir}`)")
    try:
        ckpt = checkpoint.load(path, map_location="cpu")
    except Exception as e:  # a truncated or foreign file: torch raises several types, all mean "unreadable"
        raise UseError(f"{path}: not a readable search checkpoint ({type(e).__name__}: {e})") from None
    setup = _setup(run_dir)
    results_path = run_dir / "results.json"
    found = (json.loads(results_path.read_text()).get("best") if results_path.is_file() else None) or {}
    champion = ckpt["driver"].get("champion")
    if setup.method == "pbt":
        pop_best = ckpt["population"]["best"]
        slot = int(pop_best["val_acc"].argmax())
        if int(pop_best["epoch"][slot]) < 0:
            raise UseError(f"{run_dir}: no member of the search reached a finite validation accuracy; nothing to export")
        number, values = slot, ckpt["slot_values"][slot]
        params = {k: t[slot] for k, t in pop_best["params"].items()}
        state = {k: t[slot] for k, t in pop_best["model_state"].items()}
        epoch, val_acc = int(pop_best["epoch"][slot]), float(pop_best["val_acc"][slot])
    elif champion is None:
        raise UseError(f"{run_dir}: no trial of the search has finished yet, so there is no best trial; "
                       f"continue it with `python runner.py --resume {run_dir}`")
    else:
        number = int(champion["number"])
        rec = ckpt["driver"]["trials"][str(number)]
        values, params, state = rec["params"], champion["params"], champion["model_state"]
        epoch, val_acc = int(rec["best_epoch"]), rec["best_val_acc"]
    variant = setup.variant(values, number)
    sd = build_from(variant.model).to_state_dict(params, state)
    test_acc = found.get("test_acc") if found.get("trial") == number else None  # measured once the search ends
    return [Member(id=f"trial-{number}", variant=variant, population=0, index=number, state_dict=sd,
                   best_epoch=epoch, val_acc=val_acc, test_acc=test_acc)], []
