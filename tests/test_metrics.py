"""search.training.metrics: values checked against hand-computed confusion counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from search.training.metrics import OBJECTIVES, choose_threshold, classification_metrics, scalar_metrics


def test_classification_metrics_match_hand_computed_values() -> None:
    y = [0, 0, 0, 0, 1, 1]
    scores = [0.1, 0.2, 0.6, 0.3, 0.9, 0.4]
    # threshold 0.5: predictions 0 0 1 0 1 0 -> TN=3 FP=1 FN=1 TP=1
    m = classification_metrics(y, scores, 0.5)
    assert m["confusion_matrix"] == [[3, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision_0"] == pytest.approx(3 / 4)
    assert m["recall_0"] == pytest.approx(3 / 4)
    assert m["f1_0"] == pytest.approx(3 / 4)
    assert m["precision_1"] == pytest.approx(1 / 2)
    assert m["recall_1"] == pytest.approx(1 / 2)
    assert m["f1_1"] == pytest.approx(1 / 2)
    assert m["precision_macro"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["recall_macro"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["f1_macro"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    # ROC-AUC: of the 8 (positive, negative) pairs, 0.9 beats all 4, 0.4 beats 0.1, 0.2, 0.3 -> 7/8
    assert m["roc_auc"] == pytest.approx(7 / 8)
    # AP: ranks 0.9 (pos, P=1), 0.6 (neg), 0.4 (pos, P=2/3): AP = (1 + 2/3) / 2
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)


def test_threshold_is_inclusive_and_tensors_are_accepted() -> None:
    m = classification_metrics(torch.tensor([0.0, 1.0]), torch.tensor([0.2, 0.5]), 0.5)
    assert m["confusion_matrix"] == [[1, 0], [0, 1]]
    assert m["accuracy"] == 1.0


def test_one_class_only_gives_nan_aucs_and_zero_division_zero() -> None:
    m = classification_metrics([0, 0, 0], [0.1, 0.7, 0.2], 0.5)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert m["precision_1"] == 0.0 and m["recall_1"] == 0.0  # no positives: zero_division=0
    assert m["confusion_matrix"] == [[2, 1], [0, 0]]


def test_length_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        classification_metrics([0, 1], [0.5], 0.5)


def test_scalar_metrics_drops_the_confusion_matrix() -> None:
    m = classification_metrics([0, 1, 1], [0.2, 0.8, 0.3], 0.5)
    scalars = scalar_metrics({**m, "flag": True, "n": np.int64(3)})
    assert "confusion_matrix" not in scalars and "flag" not in scalars
    assert scalars["n"] == 3.0
    assert set(scalars) >= set(OBJECTIVES)
    assert all(isinstance(v, float) for v in scalars.values())


def test_every_objective_is_a_metric_and_maximised() -> None:
    m = classification_metrics([0, 1], [0.2, 0.8], 0.5)
    for name, direction in OBJECTIVES.items():
        assert name in m
        assert direction == "maximize"


def test_choose_threshold_separates_separable_errors() -> None:
    errors = np.array([0.10, 0.12, 0.20, 0.15, 0.80, 0.95, 0.70])
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    t = choose_threshold(errors, y)
    assert 0.20 < t <= 0.70
    assert classification_metrics(y, errors, t)["f1_macro"] == 1.0


def test_choose_threshold_optimises_the_requested_metric() -> None:
    # One anomaly hides among normals: best f1_1 flags it with 1 FP; "nothing flagged" wins accuracy
    # only when flagging costs more errors than it saves.
    errors = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    y = np.array([0, 0, 0, 0, 1, 0])
    t_f1 = choose_threshold(errors, y, "f1_1")
    assert classification_metrics(y, errors, t_f1)["f1_1"] == pytest.approx(2 / 3)
    t_acc = choose_threshold(errors, y, "accuracy")
    assert t_acc > 0.6  # flag nothing: 5/6 correct, better than any cut that catches 0.5
    assert classification_metrics(y, errors, t_acc)["accuracy"] == pytest.approx(5 / 6)


def test_choose_threshold_matches_brute_force_on_random_data() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(int)
    errors = rng.normal(size=300) + y * 1.0
    errors[:20] = errors[20:40]  # ties must not break it
    t = choose_threshold(errors, y, "f1_macro")
    best = max(classification_metrics(y, errors, c)["f1_macro"] for c in np.unique(errors))
    assert classification_metrics(y, errors, t)["f1_macro"] == pytest.approx(best)


def test_choose_threshold_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="threshold metric"):
        choose_threshold([0.1, 0.2], [0, 1], "roc_auc")
    with pytest.raises(ValueError, match="NaN"):
        choose_threshold([0.1, float("nan")], [0, 1])
