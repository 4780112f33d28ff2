"""What a retrain exports: the seed best on validation, or the ensemble of every seed that trained.

Either way the test split chooses nothing: the seed is picked on validation, the ensemble's
threshold is chosen by the rule a single model's is, and the test metrics are computed once, to report.
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

    @property
    def ensemble(self) -> bool:
        return len(self.seeds) > 1


def _objective_key(value: Any) -> float:
    value = float(value)
    return -math.inf if math.isnan(value) else value


def _rebuilt(family: str, model_params: dict[str, Any], data: ECGDataset, state: dict[str, torch.Tensor]) -> nn.Module:
    model = build_model(family, model_params, data)
    model.load_state_dict(state)
    return model.eval()


def best_on_validation(
    results: Sequence[SeedResult], family: str, model_params: dict[str, Any], data: ECGDataset, *, objective: str
) -> ExportChoice:
    """The seed whose validation objective is highest (NaN never wins), with its own threshold and metrics."""
    best = max(results, key=lambda r: _objective_key(r.val_metrics[objective]))
    return ExportChoice(
        seeds=[best.seed],
        threshold=best.threshold,
        val_metrics=best.val_metrics,
        test_metrics=best.test_metrics,
        models=[_rebuilt(family, model_params, data, best.state)],
    )


def seed_ensemble(
    results: Sequence[SeedResult],
    family: str,
    model_params: dict[str, Any],
    data: ECGDataset,
    *,
    objective: str,
    device: torch.device,
) -> ExportChoice:
    """Every seed that trained, scored as the mean of their scores; one seed left is exported alone."""
    if len(results) == 1:
        return best_on_validation(results, family, model_params, data, objective=objective)
    autoencoder = ecgmodels.is_autoencoder(family)
    models = [_rebuilt(family, model_params, data, r.state) for r in results]
    scorer = EnsembleScoringModel(models, autoencoder).to(device)
    threshold = ensemble_threshold(scorer, data, objective=objective, device=device, seed=results[0].seed)
    val_scores = score(scorer, data.X_val.to(device)).cpu().numpy()
    test_scores = score(scorer, data.X_test.to(device)).cpu().numpy()
    y_val, y_test = data.y_val.cpu().numpy(), data.y_test.cpu().numpy()
    return ExportChoice(
        seeds=[r.seed for r in results],
        threshold=threshold,
        val_metrics=classification_metrics(y_val, val_scores, threshold),
        test_metrics=classification_metrics(y_test, test_scores, threshold),
        models=models,
    )
