"""The one threshold rule, for every family: chosen on training windows, never on the data it is scored on.

After each epoch the model scores a fixed, stratified sample of the training split (autoencoders score
normal and anomalous windows alike, though they train on normal ones only), and
`metrics.choose_threshold` picks the cut on those scores. Validation metrics are then computed at that
cut, so a threshold objective such as f1_macro is not flattered by a cut tuned on validation, and
classifiers and autoencoders are compared under the same rule.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# The sample's size: a quarter of the training windows, at least THRESHOLD_SAMPLE_MIN (or all of them)
# and at most THRESHOLD_SAMPLE_MAX. Scoring a window in eval mode costs about an eighth of a training
# step (default cnn on one CPU thread: 5,800 vs 720 windows/s), so the pass costs about 3% of an epoch
# (measured: 2.9% on the MIT-BIH DS1 training split of 3,240 windows, 4% on 768), less on larger splits.
THRESHOLD_SAMPLE_SHARE = 0.25
THRESHOLD_SAMPLE_MIN = 256
THRESHOLD_SAMPLE_MAX = 1024
# Objectives that make a sensible cut; the others (ROC/PR-AUC do not depend on it; recall_1 or a
# precision alone is maximised by a degenerate one) choose the cut by f1_macro instead.
THRESHOLD_OBJECTIVES = ("f1_macro", "f1_1", "accuracy", "recall_macro")


def threshold_metric(objective: str) -> str:
    """The metric the cut maximises for a study optimising `objective`."""
    return objective if objective in THRESHOLD_OBJECTIVES else "f1_macro"


def threshold_sample_size(n: int) -> int:
    """How many of `n` training windows the cut is chosen on."""
    share = math.ceil(n * THRESHOLD_SAMPLE_SHARE)
    return min(n, THRESHOLD_SAMPLE_MAX, max(THRESHOLD_SAMPLE_MIN, share))


def threshold_sample(y: Tensor, size: int, *, seed: int = 0) -> Tensor:
    """Sorted indices (CPU, int64) of a class-stratified sample of `size` of the 0/1 labels `y` (all when fewer).

    Each class keeps its share (a present class keeps at least one window), drawn without replacement
    by a generator seeded with `seed`, so the sample is the same every epoch.
    """
    if size < 1:
        raise ValueError(f"the threshold sample needs at least 1 window, got {size}")
    labels = y.detach().cpu().reshape(-1)
    n = labels.numel()
    if n <= size:
        return torch.arange(n)
    positives = torch.nonzero(labels == 1).flatten()
    negatives = torch.nonzero(labels != 1).flatten()
    n_pos = 0 if positives.numel() == 0 else max(1, round(size * positives.numel() / n))
    n_pos = min(n_pos, positives.numel(), size - (1 if negatives.numel() else 0))
    n_neg = min(size - n_pos, negatives.numel())
    generator = torch.Generator().manual_seed(seed)
    chosen = [
        positives[torch.randperm(positives.numel(), generator=generator)[:n_pos]],
        negatives[torch.randperm(negatives.numel(), generator=generator)[:n_neg]],
    ]
    return torch.sort(torch.cat(chosen)).values
