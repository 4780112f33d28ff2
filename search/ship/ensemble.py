"""Several retrained seeds of one config scored as one model: the mean of their scores.

The mean is taken over the scores, not the raw outputs: probabilities for classifiers (not the
sigmoid of a mean logit) and per-window reconstruction errors for autoencoders (not the error of a
mean reconstruction), so the ensemble's score is what averaging the seeds' own scores gives. Being one
`nn.Module`, the whole ensemble exports to one ONNX graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ecgmodels import record_rr_for
from search.training.loop import SplitData
from search.training.metrics import choose_threshold
from search.training.scoring import ScoringModel, score
from search.training.threshold import threshold_metric, threshold_sample, threshold_sample_size


class EnsembleScoringModel(nn.Module):
    """The mean score of several models of one family (one `ScoringModel` per member)."""

    def __init__(self, models: Sequence[nn.Module], autoencoder: bool) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(ScoringModel(model, autoencoder) for model in models)
        self.autoencoder = autoencoder

    def forward(self, x: Tensor, record_rr: Tensor | None = None) -> Tensor:
        return torch.stack([member(x, record_rr) for member in self.members]).mean(dim=0)


def ensemble_threshold(
    scorer: EnsembleScoringModel, data: SplitData, *, objective: str, device: torch.device, seed: int = 0
) -> float:
    """The threshold chosen for the ensemble by `fit`'s one rule: on a fixed, stratified sample of training
    windows (never on the validation or test windows it is scored on), by the objective when a cut can
    tune it, else F1 macro."""
    sample = threshold_sample(data.y_train, threshold_sample_size(data.y_train.numel()), seed=seed)
    windows = data.X_train[sample.to(data.X_train.device)].to(device)
    # Record RR from every training window of a patient, as training computed it, then the sample's.
    record_rr = record_rr_for(scorer, data.X_train.to(device), getattr(data, "groups_train", None))
    sampled_rr = record_rr[sample.to(record_rr.device)] if record_rr is not None else None
    scores = score(scorer.to(device), windows, record_rr=sampled_rr).cpu()
    return float(choose_threshold(scores, data.y_train.cpu()[sample], threshold_metric(objective)))
