"""Binary classification metrics (scikit-learn) and the autoencoder threshold choice."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

# Objective name -> study direction. Every objective is a "higher is better" validation metric.
OBJECTIVES: dict[str, str] = {
    "roc_auc": "maximize",
    "pr_auc": "maximize",
    "f1_macro": "maximize",
    "f1_1": "maximize",
    "accuracy": "maximize",
    "recall_1": "maximize",
    "precision_macro": "maximize",
    "recall_macro": "maximize",
}

# Metrics `choose_threshold` can optimise: each is a function of the confusion counts at a threshold.
THRESHOLD_METRICS = ("f1_macro", "f1_1", "f1_0", "accuracy", "recall_macro", "precision_macro", "recall_1")


def _as_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, possibly on a GPU
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def classification_metrics(y_true: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """Metrics of `scores >= threshold` against 0/1 labels, plus threshold-free ROC-AUC and PR-AUC.

    `scores` are probabilities (classifiers) or reconstruction errors (autoencoders): anything where
    higher means "more likely anomalous". ROC-AUC and PR-AUC are NaN when `y_true` has one class only.
    """
    y = _as_numpy(y_true).astype(np.int64)
    s = _as_numpy(scores)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} labels, {s.shape[0]} scores")
    if y.size == 0:
        raise ValueError("cannot compute metrics on an empty split")
    pred = (s >= threshold).astype(np.int64)
    labels = [0, 1]
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, labels=labels, average=None, zero_division=0)
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(y, pred)),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "f1_macro": float(np.mean(f1)),
    }
    for label in labels:
        out[f"precision_{label}"] = float(precision[label])
        out[f"recall_{label}"] = float(recall[label])
        out[f"f1_{label}"] = float(f1[label])
    both_classes = np.unique(y).size == 2
    out["roc_auc"] = float(roc_auc_score(y, s)) if both_classes else math.nan
    out["pr_auc"] = float(average_precision_score(y, s)) if both_classes else math.nan
    out["confusion_matrix"] = confusion_matrix(y, pred, labels=labels).tolist()
    return out


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The entries that are plain numbers (drops e.g. the confusion matrix), as floats."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, Real | np.number) and not isinstance(v, bool)}


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # zero_division=0, as scikit-learn is called above
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def choose_threshold(errors_val: Any, y_val: Any, metric: str = "f1_macro") -> float:
    """The anomaly-score threshold that maximises `metric` on the validation split.

    Every distinct cut of the sorted scores is a candidate (midpoints between consecutive distinct
    values, plus "everything anomalous" and "nothing anomalous"); the confusion counts at all of them
    come from one cumulative sum, so this is exact and O(n log n) rather than one sklearn call per
    candidate. Ties go to the highest threshold (fewest alarms).
    """
    if metric not in THRESHOLD_METRICS:
        raise ValueError(f"threshold metric {metric!r} is not one of {', '.join(THRESHOLD_METRICS)}")
    e = _as_numpy(errors_val)
    y = _as_numpy(y_val).astype(np.int64)
    if e.shape != y.shape or e.size == 0:
        raise ValueError(f"need one label per error and at least one (got {y.size} labels, {e.size} errors)")
    if not np.all(np.isfinite(e)):
        raise ValueError("validation errors contain NaN or inf; cannot choose a threshold")
    order = np.argsort(-e, kind="stable")
    e_desc, y_desc = e[order], y[order]
    n, n_pos = e.size, int(y.sum())
    n_neg = n - n_pos
    # Cut k flags the k highest scores as anomalous (k = 0 .. n); only cuts between distinct values exist.
    distinct = np.flatnonzero(e_desc[:-1] > e_desc[1:]) + 1
    ks = np.concatenate(([0], distinct, [n]))
    tp_at = np.concatenate(([0], np.cumsum(y_desc)))
    tp = tp_at[ks].astype(np.float64)
    fp = ks - tp
    fn = n_pos - tp
    tn = n_neg - fp
    f1_1 = _safe_ratio(2 * tp, 2 * tp + fp + fn)
    f1_0 = _safe_ratio(2 * tn, 2 * tn + fn + fp)
    recall_1, recall_0 = _safe_ratio(tp, tp + fn), _safe_ratio(tn, tn + fp)
    precision_1, precision_0 = _safe_ratio(tp, tp + fp), _safe_ratio(tn, tn + fn)
    value = {
        "f1_macro": (f1_0 + f1_1) / 2,
        "f1_1": f1_1,
        "f1_0": f1_0,
        "accuracy": (tp + tn) / n,
        "recall_macro": (recall_0 + recall_1) / 2,
        "precision_macro": (precision_0 + precision_1) / 2,
        "recall_1": recall_1,
    }[metric]
    best = int(ks[int(np.argmax(value))])
    if best == 0:  # nothing flagged: a threshold just above the largest score
        return float(np.nextafter(e_desc[0], np.inf))
    if best == n:  # everything flagged
        return float(e_desc[-1])
    lowest_flagged, highest_unflagged = e_desc[best - 1], e_desc[best]
    middle = (lowest_flagged + highest_unflagged) / 2
    # Adjacent floats have no midpoint strictly between them; then cut exactly at the flagged one.
    return float(middle if middle > highest_unflagged else lowest_flagged)
