"""One trained network picked for export: what source.py (a study run's variants) and trial.py (a search's best
trial) both hand to export.py and predict.py, in its own module so neither of the two imports the other."""
from __future__ import annotations

from dataclasses import dataclass

from fer_func.config import VariantConfig


@dataclass(frozen=True)
class Member:
    """One trained network: its config, where it sits in the run, and its best-epoch reference state_dict."""
    id: str
    variant: VariantConfig
    population: int
    index: int                 # row in the population's stacked state
    state_dict: dict           # model.to_state_dict(best params, best model state)
    best_epoch: int
    val_acc: float | None      # best-epoch validation accuracy (results.json; None if the run has not finished)
    test_acc: float | None
