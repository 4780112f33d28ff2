"""Train one config from scratch once per seed, evaluate each seed once, and tell a listener how it goes.

Each seed's final metrics are computed in float32 without autocast, with the threshold `fit` chose:
the numbers the exported model reproduces. Progress goes to an optional callback as events, so the
caller decides how (or whether) to show it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

import ecgmodels
from search.data import ECGDataset
from search.training.config import TrainConfig
from search.training.device import seed_everything
from search.training.loop import TrainingDiverged, fit
from search.training.metrics import classification_metrics, scalar_metrics
from search.training.scoring import score_windows


@dataclass(frozen=True)
class SeedStarted:
    seed: int
    epochs: int  # the budget; early stopping may end the seed sooner


@dataclass(frozen=True)
class EpochDone:
    seed: int
    epoch: int
    metrics: dict[str, float]  # what `fit` reports: train_loss, val_loss, val_<metric>, lr, …


@dataclass(frozen=True)
class SeedFinished:
    seed: int
    best_epoch: int
    val_value: float  # the objective on validation, at the best epoch
    stopped_early: bool


@dataclass(frozen=True)
class SeedDiverged:
    seed: int
    reason: str


RetrainEvent = SeedStarted | EpochDone | SeedFinished | SeedDiverged
ProgressCallback = Callable[[RetrainEvent], None]


@dataclass
class SeedResult:
    seed: int
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    threshold: float
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    seconds: float
    state: dict[str, torch.Tensor] = field(repr=False)
    # The cross-validation fold a member of a fold ensemble held out (it trained on the other folds'
    # patients, and its validation metrics are that fold's); None for a seed trained on all the data.
    fold: int | None = None


def build_model(family: str, model_params: dict[str, Any], data: ECGDataset, fs: float | None) -> torch.nn.Module:
    """A fresh model of the trial's architecture for `data`'s windows sampled at `fs` Hz (the study's rate):
    the one place retraining builds one."""
    return ecgmodels.build(family, n_channels=data.n_channels, seq_len=data.seq_len, fs=fs, **model_params)


def final_metrics(
    model: torch.nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    groups: torch.Tensor | None,
    *,
    autoencoder: bool,
    threshold: float,
    device: torch.device,
) -> dict[str, Any]:
    """The full metric set in float32 without autocast: the numbers the exported model reproduces
    (`groups`, the windows' patients, feed a model with record-relative timing)."""
    scores = score_windows(model, X, autoencoder=autoencoder, groups=groups, device=device)
    return classification_metrics(y.cpu(), scores, threshold)


def train_seeds(
    family: str,
    model_params: dict[str, Any],
    train_cfg: TrainConfig,
    data: ECGDataset,
    *,
    seeds: int,
    device: torch.device,
    fs: float | None,
    on_progress: ProgressCallback | None = None,
    fold: int | None = None,
) -> tuple[list[SeedResult], list[SeedDiverged]]:
    """Train seeds train_cfg.seed .. +seeds-1 from scratch on normalised `data` (already on `device`).

    Returns the seeds that trained and those whose training diverged (they are left out, not fatal);
    `fold` tags the results as members of a fold ensemble (`data` is that fold's view).
    """
    notify = on_progress or (lambda event: None)
    results: list[SeedResult] = []
    diverged: list[SeedDiverged] = []
    for index in range(seeds):
        cfg = replace(train_cfg, seed=train_cfg.seed + index)
        notify(SeedStarted(cfg.seed, cfg.epochs))
        try:
            result = train_one_seed(family, model_params, cfg, data, device=device, fs=fs, notify=notify)
        except TrainingDiverged as error:
            diverged.append(SeedDiverged(cfg.seed, str(error)))
            notify(diverged[-1])
            continue
        results.append(replace(result, fold=fold))
        value = result.val_metrics.get(cfg.objective, math.nan)  # NaN: a final fit has no validation windows
        notify(SeedFinished(cfg.seed, result.best_epoch, value, result.stopped_early))
    return results, diverged


def train_one_seed(
    family: str,
    model_params: dict[str, Any],
    cfg: TrainConfig,
    data: ECGDataset,
    *,
    device: torch.device,
    fs: float | None,
    notify: ProgressCallback,
) -> SeedResult:
    autoencoder = ecgmodels.is_autoencoder(family)
    seed_everything(cfg.seed)  # the initial weights come from the seed, not from the previous run
    model = build_model(family, model_params, data, fs)
    started = time.perf_counter()

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        notify(EpochDone(cfg.seed, epoch, metrics))

    fitted = fit(model, data, cfg, autoencoder=autoencoder, device=device, on_epoch=on_epoch, fs=fs)
    common = {"autoencoder": autoencoder, "threshold": fitted.threshold, "device": device}
    return SeedResult(
        seed=cfg.seed,
        best_epoch=fitted.best_epoch,
        epochs_run=len(fitted.history),
        stopped_early=fitted.stopped_early,
        threshold=float(fitted.threshold),
        val_metrics=final_metrics(model, data.X_val, data.y_val, data.groups_val, **common) if len(data.y_val) else {},
        test_metrics=final_metrics(model, data.X_test, data.y_test, data.groups_test, **common),
        seconds=time.perf_counter() - started,
        state=fitted.best_state,
    )


def summarise_seeds(results: list[SeedResult]) -> dict[str, dict[str, float | None]]:
    """Mean and sample standard deviation of every scalar test metric across seeds (std None for one)."""
    names = scalar_metrics(results[0].test_metrics).keys()
    summary: dict[str, dict[str, float | None]] = {}
    for name in names:
        values = np.array([float(r.test_metrics[name]) for r in results], dtype=np.float64)
        summary[name] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else None,
        }
    return summary
