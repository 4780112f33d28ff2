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

from search.training.loop import AE_THRESHOLD_OBJECTIVES, SplitData
from search.training.metrics import choose_threshold
from search.training.scoring import ScoringModel, score

# The threshold `fit` gives a classifier: probabilities are calibrated by the loss, not tuned.
CLASSIFIER_THRESHOLD = 0.5


class EnsembleScoringModel(nn.Module):
    """The mean score of several models of one family (one `ScoringModel` per member)."""

    def __init__(self, models: Sequence[nn.Module], autoencoder: bool) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(ScoringModel(model, autoencoder) for model in models)
        self.autoencoder = autoencoder

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


def ensemble_threshold(
    scorer: EnsembleScoringModel, data: SplitData, *, autoencoder: bool, objective: str, device: torch.device
) -> float:
    """The threshold `search.training.loop.fit` chooses for one model, chosen the same way on the ensemble's
    scores: classifiers keep 0.5; autoencoders take the cut that maximises the objective on validation
    (F1 macro for objectives a cut cannot tune, as `fit` does)."""
    if not autoencoder:
        return CLASSIFIER_THRESHOLD
    metric = objective if objective in AE_THRESHOLD_OBJECTIVES else "f1_macro"
    val_scores = score(scorer.to(device), data.X_val.to(device)).cpu()
    return float(choose_threshold(val_scores, data.y_val.cpu(), metric))
