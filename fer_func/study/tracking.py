"""Weights & Biases tracking: one W&B run per variant, a study's runs side by side in one group.

A population trains all its variants in one process, so the runs are created together with
``wandb.init(reinit="create_new")`` (wandb >= 0.19.10) and each is logged through its own ``Run``
object, once per epoch. Offline mode (the default) needs no account or network: the runs land in
``RUN_DIR/wandb/offline-run-*`` and ``wandb sync RUN_DIR/wandb/offline-run-*`` uploads them later.
``disabled`` never imports wandb, so it works where wandb is not installed.

The records passed in are those of report.py's results structure, so the W&B view and the local
report always show the same numbers.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from fer_func.config import ConfigError
from fer_func.study.experiments import variant_id
from fer_func.study.report import CLASSES, best_variant

MODES = ("offline", "online", "disabled")


class Tracker:
    """``start`` the runs, ``log_epoch`` once per epoch, ``finish`` with the final results.

    Use as a context manager so the runs are closed (marked failed) if training raises.
    """

    def __init__(self, mode: str, run_dir, *, project: str = "fer-func", group: str | None = None):
        if mode not in MODES:
            raise ConfigError(f"--wandb {mode!r}: choose one of {', '.join(MODES)}")
        self.mode, self.run_dir, self.project = mode, Path(run_dir), project
        self.group = group or self.run_dir.name
        self.runs: list = []
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
        wandb = self._wandb
        (self.run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        for v, n in zip(variants, param_counts):
            config = {**dataclasses.asdict(v), "param_count": int(n), "variant_id": variant_id(v)}
            config.update({f"hp/{k}": x for k, x in v.hparams.items()})  # flat copies: easy to filter and group by
            run = wandb.init(project=self.project, group=self.group, job_type=v.experiment, name=variant_id(v),
                             config=config, mode=self.mode, dir=str(self.run_dir), reinit="create_new",
                             settings=wandb.Settings(console="off", silent=True))
            run.define_metric("epoch")
            run.define_metric("*", step_metric="epoch")  # charts against epochs, not log calls
            self.runs.append(run)

    def open_run(self, name: str, config: dict, *, run_id: str | None = None):
        """One more run in this group, returned to the caller, who logs and finishes it (a search's
        trials start and end at different times). ``run_id`` lets a resumed process continue it.
        None when tracking is disabled."""
        if not self.enabled:
            return None
        wandb = self._wandb
        (self.run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=self.project, group=self.group, name=name, config=config, mode=self.mode,
                         dir=str(self.run_dir), reinit="create_new", id=run_id, resume="allow" if run_id else None,
                         settings=wandb.Settings(console="off", silent=True))
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")
        return run

    def log_epoch(self, records: list[dict]) -> None:
        """One epoch record per variant (report.EPOCH_KEYS), in ``start`` order."""
        if not self.enabled:
            return
        if len(records) != len(self.runs):
            raise ValueError(f"log_epoch got {len(records)} records for {len(self.runs)} runs")
        for run, record in zip(self.runs, records):
            run.log({k: x for k, x in record.items() if x is not None})

    def log_epoch_by_id(self, records: dict) -> None:
        """Like :meth:`log_epoch` for some variants only (one population of several), keyed by variant id."""
        if not self.enabled:
            return
        for run in self.runs:
            record = records.get(run.config["variant_id"])
            if record is not None:
                run.log({k: x for k, x in record.items() if x is not None})

    def finish(self, results: dict) -> None:
        """Confusion matrix, per-class table and summary values for each variant, then close the runs."""
        if not self.enabled:
            return
        wandb = self._wandb
        best = best_variant(results)
        for i, (run, v) in enumerate(zip(self.runs, results["variants"])):
            final = v["final"]
            cm = final["confusion"]
            y_true = [r for r in range(len(cm)) for c in range(len(cm)) for _ in range(int(cm[r][c]))]
            y_pred = [c for r in range(len(cm)) for c in range(len(cm)) for _ in range(int(cm[r][c]))]
            pc = final["per_class"]
            table = wandb.Table(columns=["class", "precision", "recall", "f1", "support"],
                                data=[[name, pc["precision"][k], pc["recall"][k], pc["f1"][k], int(sum(cm[k]))]
                                      for k, name in enumerate(CLASSES)])
            logs = {"per_class": table}
            if y_true:
                logs["confusion_matrix"] = wandb.plot.confusion_matrix(y_true=y_true, preds=y_pred,
                                                                        class_names=list(CLASSES))
            run.log(logs)
            epochs = [e for e in v["epochs"] if e.get("val_acc") is not None]
            run.summary.update({
                "best_val_acc": max((e["val_acc"] for e in epochs), default=None),
                "best_epoch": final["best_epoch"], "final_train_acc": final["train_acc"],
                "final_val_acc": final["val_acc"], "test_acc": final["test_acc"], "gap": final["gap"],
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
