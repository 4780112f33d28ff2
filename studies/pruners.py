"""Pruners by name; resources are epochs (the worker reports once per epoch, counting from 1)."""

from __future__ import annotations

import optuna

from studies.errors import UnknownComponent

PRUNERS = ("hyperband", "median", "sha", "none")
REDUCTION_FACTOR = 3
MEDIAN_STARTUP_TRIALS = 4


def make_pruner(name: str, *, min_epochs: int = 1, max_epochs: int) -> optuna.pruners.BasePruner:
    """The pruner called `name`; no trial is pruned before it has trained `min_epochs` epochs."""
    if name not in PRUNERS:
        raise UnknownComponent("pruner", name, PRUNERS)
    if not 1 <= min_epochs <= max_epochs:
        raise ValueError(
            f"epochs for the pruner must satisfy 1 <= min_epochs <= max_epochs; "
            f"got min_epochs={min_epochs}, max_epochs={max_epochs}"
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=min_epochs, max_resource=max_epochs, reduction_factor=REDUCTION_FACTOR
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=min_epochs)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=REDUCTION_FACTOR)
    return optuna.pruners.NopPruner()
