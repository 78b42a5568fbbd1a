"""Weights & Biases tracking: one W&B run per variant, a study's runs side by side in one group.

A population trains all its variants in one process, so the runs are created together with
``wandb.init(reinit="create_new")`` (wandb >= 0.19.10) and each is logged through its own ``Run``
object, once per epoch. Offline mode (the default) needs no account or network: the runs land in
``RUN_DIR/wandb/offline-run-*`` and ``wandb sync RUN_DIR/wandb/offline-run-*`` uploads them later.
``disabled`` never imports wandb, so it works where wandb is not installed.

The records passed in are those of report.py's results structure, so the W&B view and the local
report always show the same numbers. What a variant's run holds:

- per epoch: report.EPOCH_KEYS and ``gap`` (train_acc - val_acc); ``define_metric`` keeps the best
  values in the summary (``val_acc.max``, ``val_loss.min``, ...), charted against ``epoch``;
- at the end: images of its learning curves, its confusion matrix and a grid of PrivateTest faces
  with predicted and true labels, the confusion matrix and per-class table as W&B tables, and its
  best-epoch network as a ``model`` artifact (``model-<run id>``; :func:`fer_func.use.artifacts.log_models`, which the CLI hands to the run).

Run ids are fixed (:func:`run_id`: the run directory's name and the variant id) and opened with
``resume="allow"``, so ``--resume RUN_DIR`` continues the same W&B runs; epochs already logged
(RUN_DIR/wandb/logged.json) are not logged twice when a resumed population replays its history.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from fer_func.config import ConfigError
from fer_func.study.experiments import variant_id
from fer_func.study.report import CLASSES, best_variant

MODES = ("offline", "online", "disabled")
DEFAULT_PROJECT = "fer-func"
# Summaries W&B keeps per metric (define_metric): the best value of the run and the last one.
SUMMARIES = {"val_acc": "max,last", "train_acc": "max,last", "val_loss": "min,last", "train_loss": "min,last",
             "gap": "last"}
SAMPLES_PER_CLASS = 2  # the prediction grid: this many PrivateTest faces of each class, one column per class


def project_name(given: str | None) -> str:
    """--wandb-project, else $WANDB_PROJECT, else fer-func."""
    return given or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT


def entity_name(given: str | None) -> str | None:
    """--wandb-entity, else $WANDB_ENTITY, else None (wandb's default entity: your user)."""
    return given or os.environ.get("WANDB_ENTITY") or None


def run_id_for(run_name: str, key: str) -> str:
    """A W&B run id for ``key`` (a variant id, a trial) of the run directory ``run_name``: readable when it
    fits W&B's 64 allowed characters, else shortened with a hash of the whole, so ids never collide."""
    text = f"{run_name}-{key}"
    clean = re.sub(r"[^A-Za-z0-9_-]", "-", text)
    if len(clean) <= 64 and clean == text:
        return clean
    return f"{clean[:55]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _define_metrics(run) -> None:
    run.define_metric("epoch")
    run.define_metric("*", step_metric="epoch")  # charts against epochs, not log calls
    for name, summary in SUMMARIES.items():
        run.define_metric(name, step_metric="epoch", summary=summary)


def _row(record: dict) -> dict:
    row = {k: x for k, x in record.items() if x is not None}
    if "train_acc" in row and "val_acc" in row:
        row["gap"] = row["train_acc"] - row["val_acc"]  # over-fitting, epoch by epoch
    return row


class Tracker:
    """``start`` the runs, ``log_epoch`` once per epoch, ``finish`` with the final results.

    Use as a context manager so the runs are closed (marked failed) if training raises.
    """

    def __init__(self, mode: str, run_dir, *, project: str | None = None, entity: str | None = None,
                 group: str | None = None):
        if mode not in MODES:
            raise ConfigError(f"--wandb {mode!r}: choose one of {', '.join(MODES)}")
        self.mode, self.run_dir = mode, Path(run_dir)
        self.project, self.entity = project_name(project), entity_name(entity)
        self.group = group or self.run_dir.name
        self.runs: list = []
        self._logged_path = self.run_dir / "wandb" / "logged.json"
        self.logged: dict[str, int] = {}  # run id -> last epoch logged (by this process or an earlier one)
        self._wandb = None
        if mode != "disabled":
            try:
                import wandb
            except ImportError:
                raise ConfigError(f"--wandb {mode}: the wandb package is not installed; "
                                  f"`pip install wandb` or pass --wandb disabled") from None
            self._wandb = wandb

    @property
    def enabled(self) -> bool:
        return self._wandb is not None

    def start(self, variants, param_counts: list[int]) -> None:
        """One run per variant: config = the variant's full configuration + its parameter count."""
        if not self.enabled:
            return
        if len(param_counts) != len(variants):
            raise ValueError(f"param_counts has {len(param_counts)} entries for {len(variants)} variants")
        (self.run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        if self._logged_path.is_file():
            self.logged = json.loads(self._logged_path.read_text())
        for v, n in zip(variants, param_counts):
            config = {**dataclasses.asdict(v), "param_count": int(n), "variant_id": variant_id(v)}
            config.update({f"hp/{k}": x for k, x in v.hparams.items()})  # flat copies: easy to filter and group by
            self.runs.append(self._init(variant_id(v), config, run_id_for(self.run_dir.name, variant_id(v)),
                                        job_type=v.experiment))

    def _init(self, name: str, config: dict, rid: str, job_type: str | None = None):
        wandb = self._wandb
        run = wandb.init(project=self.project, entity=self.entity, group=self.group, job_type=job_type, name=name,
                         config=config, mode=self.mode, dir=str(self.run_dir), reinit="create_new", id=rid,
                         resume="allow", settings=wandb.Settings(console="off", silent=True))
        _define_metrics(run)
        return run

    def open_run(self, name: str, config: dict, *, run_id: str | None = None):
        """One more run in this group, returned to the caller, who logs and finishes it (a search's
        trials start and end at different times). ``run_id`` lets a resumed process continue it.
        None when tracking is disabled."""
        if not self.enabled:
            return None
        (self.run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        return self._init(name, config, run_id or run_id_for(self.run_dir.name, name))

    def log_epoch(self, records: list[dict]) -> None:
        """One epoch record per variant (report.EPOCH_KEYS), in ``start`` order."""
        if not self.enabled:
            return
        if len(records) != len(self.runs):
            raise ValueError(f"log_epoch got {len(records)} records for {len(self.runs)} runs")
        for run, record in zip(self.runs, records):
            self._log(run, record)
        self._save_logged()

    def log_epoch_by_id(self, records: dict) -> None:
        """Like :meth:`log_epoch` for some variants only (one population of several), keyed by variant id."""
        if not self.enabled:
            return
        for run in self.runs:
            record = records.get(run.config["variant_id"])
            if record is not None:
                self._log(run, record)
        self._save_logged()

    def _log(self, run, record: dict) -> None:
        if record["epoch"] <= self.logged.get(run.id, -1):  # a resumed population replays its epochs
            return
        run.log(_row(record))
        self.logged[run.id] = int(record["epoch"])

    def _save_logged(self) -> None:
        from fer_func.study.checkpoint import atomic_write
        atomic_write(self._logged_path, json.dumps(self.logged).encode())

    def finish(self, results: dict) -> None:
        """Images of the learning curves and confusion matrix, the confusion matrix and per-class table,
        and summary values for each variant, then close the runs. The study's own figures
        (RUN_DIR/plots/*.png) go to the best variant's run."""
        if not self.enabled:
            return
        from fer_func.study import plots

        wandb = self._wandb
        best = best_variant(results)
        with tempfile.TemporaryDirectory(prefix="fer-func-wandb-") as tmp:
            for i, (run, v) in enumerate(zip(self.runs, results["variants"])):
                final = v["final"]
                cm = final["confusion"]
                y_true = [r for r in range(len(cm)) for c in range(len(cm)) for _ in range(int(cm[r][c]))]
                y_pred = [c for r in range(len(cm)) for c in range(len(cm)) for _ in range(int(cm[r][c]))]
                pc = final["per_class"]
                table = wandb.Table(columns=["class", "precision", "recall", "f1", "support"],
                                    data=[[name, pc["precision"][k], pc["recall"][k], pc["f1"][k], int(sum(cm[k]))]
                                          for k, name in enumerate(CLASSES)])
                here = Path(tmp) / run.id
                here.mkdir()
                logs = {"per_class": table,
                        "learning_curves_image": wandb.Image(str(plots.learning_curves(here / "curves.png", [v]))),
                        "confusion_matrix_image": wandb.Image(str(plots.confusion(
                            here / "confusion.png", cm, CLASSES, title=f"{v['id']}: best epoch, PrivateTest")))}
                if y_true:
                    logs["confusion_matrix"] = wandb.plot.confusion_matrix(y_true=y_true, preds=y_pred,
                                                                            class_names=list(CLASSES))
                if i == best:
                    logs.update({f"study/{p.stem}": wandb.Image(str(p))
                                 for p in sorted((self.run_dir / "plots").glob("*.png"))})
                run.log(logs)
                run.summary.update({
                    "best_epoch": final["best_epoch"], "final_train_acc": final["train_acc"],
                    "final_val_acc": final["val_acc"], "test_acc": final["test_acc"], "final_gap": final["gap"],
                    "diverged": bool(v["diverged"]), "param_count": v["param_count"], "best_of_study": i == best})
                run.finish()
        self.runs = []

    def close(self, exit_code: int = 1) -> None:
        """Finish runs still open (after an error: ``exit_code`` != 0 marks them failed)."""
        for run in self.runs:
            run.finish(exit_code=exit_code)
        self.runs = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(exit_code=0 if exc_type is None else 1)
        return False
