"""How a per-epoch validation curve becomes one trial value, and which epoch's weights are kept.

`best` is the luckiest epoch (a model that never trained can win at epoch 1 by chance); `last` is the
final epoch; `smoothed` is the best trailing k-epoch mean, which rewards a model that stays good. The
kept weights are those at the end of the chosen window, so a retrained model follows the same rule.
NaN (e.g. ROC-AUC of a one-class split) never beats a number; ties go to the earliest epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SELECTION_RULES = ("best", "last", "smoothed")


def smoothed_curve(values: Sequence[float], k: int) -> list[float]:
    """Trailing means over windows of min(k, len(values)) epochs; NaN where no whole window ends yet.

    A run shorter than k has one window, all of it: its mean is the last entry. A NaN inside a window
    makes that window's mean NaN.
    """
    if k < 1:
        raise ValueError(f"the smoothing window must be at least 1 epoch, got {k}")
    window = min(k, len(values))
    out: list[float] = []
    for end in range(len(values)):
        if end + 1 < window:
            out.append(math.nan)
        else:
            out.append(math.fsum(values[end + 1 - window : end + 1]) / window)
    return out


def _first_best(values: Sequence[float], candidates: range) -> int:
    """Index of the first maximum among `candidates`; NaN only wins when every candidate is NaN."""
    best = candidates[0]
    for index in candidates:
        value, current = values[index], values[best]
        if not math.isnan(value) and (math.isnan(current) or value > current):
            best = index
    return best


def curve_value(values: Sequence[float], rule: str, k: int = 3) -> tuple[float, int]:
    """(value, epoch) that `rule` makes of a per-epoch curve (epochs count from 1).

    `smoothed` returns the best trailing k-epoch mean and the last epoch of that window.
    """
    if not values:
        raise ValueError("a curve needs at least one epoch")
    if rule == "last":
        return float(values[-1]), len(values)
    if rule == "best":
        index = _first_best(values, range(len(values)))
        return float(values[index]), index + 1
    if rule == "smoothed":
        smooth = smoothed_curve(values, k)
        first_defined = min(k, len(values)) - 1
        index = _first_best(smooth, range(first_defined, len(values)))
        return smooth[index], index + 1
    raise ValueError(f"selection rule {rule!r} is not one of {', '.join(SELECTION_RULES)}")
