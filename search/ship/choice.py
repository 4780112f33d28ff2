"""What a retrain exports: the seed best on validation, the ensemble of every seed that trained, or the
ensemble of a cross-validated study's fold models.

Either way the test split chooses nothing: the seed is picked on validation, an ensemble's threshold
is chosen by the rule a single model's is, and the test metrics are computed once, to report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import ecgmodels
from search.data import ECGDataset
from search.ship.ensemble import EnsembleScoringModel, ensemble_threshold
from search.ship.seeds import SeedResult, build_model
from search.training.metrics import classification_metrics
from search.training.scoring import score


@dataclass
class ExportChoice:
    """The model(s) that go into the bundle, with the threshold and the metrics they are reported with."""

    seeds: list[int]
    threshold: float
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    models: list[nn.Module] = field(repr=False)
    # The fold each member held out, for the ensemble of a cross-validated study's fold models; else None.
    folds: list[int] | None = None

    @property
    def ensemble(self) -> bool:
        return len(self.seeds) > 1


def _objective_key(value: Any) -> float:
    value = float(value)
    return -math.inf if math.isnan(value) else value


def _rebuilt(
    family: str, model_params: dict[str, Any], data: ECGDataset, fs: float | None, state: dict[str, torch.Tensor]
) -> nn.Module:
    model = build_model(family, model_params, data, fs)
    model.load_state_dict(state)
    return model.eval()


def best_on_validation(
    results: Sequence[SeedResult],
    family: str,
    model_params: dict[str, Any],
    data: ECGDataset,
    *,
    objective: str,
    fs: float | None,
) -> ExportChoice:
    """The seed whose validation objective is highest (NaN never wins), with its own threshold and metrics;
    the first seed when there is no validation split to choose on (a final fit on all of train+val)."""
    best = max(results, key=lambda r: _objective_key(r.val_metrics.get(objective, math.nan)))
    return ExportChoice(
        seeds=[best.seed],
        threshold=best.threshold,
        val_metrics=best.val_metrics,
        test_metrics=best.test_metrics,
        models=[_rebuilt(family, model_params, data, fs, best.state)],
    )


def mean_ensemble(
    results: Sequence[SeedResult],
    family: str,
    model_params: dict[str, Any],
    data: ECGDataset,
    *,
    objective: str,
    device: torch.device,
    fs: float | None,
) -> ExportChoice:
    """Every member that trained, scored as the mean of their scores; one member left is exported alone.

    The members are a refit's seeds, or a cross-validated study's fold models (`SeedResult.fold` set: each
    trained on the other folds' patients, an ensemble bagged over patients). `data` holds the windows the
    members' training covered; the ensemble's threshold is chosen on them by the one rule."""
    if len(results) == 1:
        return best_on_validation(results, family, model_params, data, objective=objective, fs=fs)
    autoencoder = ecgmodels.is_autoencoder(family)
    models = [_rebuilt(family, model_params, data, fs, r.state) for r in results]
    scorer = EnsembleScoringModel(models, autoencoder).to(device)
    threshold = ensemble_threshold(scorer, data, objective=objective, device=device, seed=results[0].seed)
    folds = [r.fold for r in results if r.fold is not None]
    return ExportChoice(
        seeds=[r.seed for r in results],
        threshold=threshold,
        val_metrics=_metrics_of(scorer, data, "val", threshold, device) if len(data.y_val) else {},
        test_metrics=_metrics_of(scorer, data, "test", threshold, device),
        models=models,
        folds=folds if len(folds) == len(results) else None,
    )


def _metrics_of(
    scorer: nn.Module, data: ECGDataset, split: str, threshold: float, device: torch.device
) -> dict[str, Any]:
    X, y = data.split(split)
    X = X.to(device)
    scores = score(scorer, X, record_rr=ecgmodels.record_rr_for(scorer, X, data.groups(split)))
    return classification_metrics(y.cpu().numpy(), scores.cpu().numpy(), threshold)
