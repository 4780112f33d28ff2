"""The one threshold rule, for every family: chosen on training windows, never on the data it is scored on.

After each epoch the model scores a fixed, stratified sample of the training split (all of it up to
`THRESHOLD_SAMPLE_CAP` windows; autoencoders score normal and anomalous windows alike, though they
train on normal ones only), and `metrics.choose_threshold` picks the cut on those scores. Validation
metrics are then computed at that cut, so a threshold objective such as f1_macro is not flattered by
a cut tuned on validation, and classifiers and autoencoders are compared under the same rule.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Scoring 1,024 windows in eval mode costs a fraction of an epoch's training on MIT-BIH-sized splits,
# and 1,024 scores place an F1-optimal cut within about a percentile.
THRESHOLD_SAMPLE_CAP = 1024
# Objectives that make a sensible cut; the others (ROC/PR-AUC do not depend on it; recall_1 or a
# precision alone is maximised by a degenerate one) choose the cut by f1_macro instead.
THRESHOLD_OBJECTIVES = ("f1_macro", "f1_1", "accuracy", "recall_macro")


def threshold_metric(objective: str) -> str:
    """The metric the cut maximises for a study optimising `objective`."""
    return objective if objective in THRESHOLD_OBJECTIVES else "f1_macro"


def threshold_sample(y: Tensor, *, cap: int = THRESHOLD_SAMPLE_CAP, seed: int = 0) -> Tensor:
    """Sorted indices (CPU, int64) of a class-stratified sample of 0/1 labels `y`: every window up to `cap`.

    Above `cap` each class keeps its share (a present class keeps at least one window), drawn without
    replacement by a generator seeded with `seed`, so the sample is the same every epoch and run.
    """
    if cap < 1:
        raise ValueError(f"the threshold sample needs a cap of at least 1 window, got {cap}")
    labels = y.detach().cpu().reshape(-1)
    n = labels.numel()
    if n <= cap:
        return torch.arange(n)
    positives = torch.nonzero(labels == 1).flatten()
    negatives = torch.nonzero(labels != 1).flatten()
    n_pos = 0 if positives.numel() == 0 else max(1, round(cap * positives.numel() / n))
    n_pos = min(n_pos, positives.numel(), cap - (1 if negatives.numel() else 0))
    n_neg = min(cap - n_pos, negatives.numel())
    generator = torch.Generator().manual_seed(seed)
    chosen = [
        positives[torch.randperm(positives.numel(), generator=generator)[:n_pos]],
        negatives[torch.randperm(negatives.numel(), generator=generator)[:n_neg]],
    ]
    return torch.sort(torch.cat(chosen)).values
