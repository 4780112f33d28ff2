"""search.training.threshold: which metric picks the cut, and the fixed sample of training windows it uses."""

from __future__ import annotations

import pytest
import torch

from search.training.metrics import OBJECTIVES, THRESHOLD_METRICS
from search.training.threshold import (
    THRESHOLD_OBJECTIVES,
    threshold_metric,
    threshold_sample,
    threshold_sample_size,
)


def test_threshold_objectives_pick_the_cut_and_the_others_use_f1_macro() -> None:
    for objective in OBJECTIVES:
        metric = threshold_metric(objective)
        assert metric in THRESHOLD_METRICS
        assert metric == (objective if objective in THRESHOLD_OBJECTIVES else "f1_macro")
    assert threshold_metric("roc_auc") == "f1_macro" and threshold_metric("accuracy") == "accuracy"
    assert threshold_metric("recall_1") == "f1_macro"  # flagging everything would maximise it


def test_the_sample_is_a_quarter_of_the_split_within_bounds() -> None:
    assert [threshold_sample_size(n) for n in (1, 96, 256, 768, 3_240, 4_096, 50_000)] == [
        1,
        96,  # small splits are taken whole
        256,
        256,  # at least 256
        810,  # a quarter
        1024,
        1024,  # at most 1,024
    ]


def test_a_split_up_to_the_size_is_taken_whole() -> None:
    y = (torch.arange(300) % 7 == 0).float()
    assert torch.equal(threshold_sample(y, 300), torch.arange(300))
    assert torch.equal(threshold_sample(y, 1024), torch.arange(300))


def test_a_larger_split_is_sampled_by_class_share_the_same_every_time() -> None:
    y = torch.zeros(10_000)
    y[torch.randperm(10_000, generator=torch.Generator().manual_seed(0))[:1_000]] = 1.0  # 10% anomalous
    sample = threshold_sample(y, 500, seed=3)
    assert sample.numel() == 500 and sample.dtype == torch.int64
    assert torch.equal(sample, torch.sort(sample).values) and sample.unique().numel() == 500
    assert int(y[sample].sum()) == 50
    assert torch.equal(sample, threshold_sample(y, 500, seed=3))
    assert not torch.equal(sample, threshold_sample(y, 500, seed=4))


def test_a_rare_class_keeps_a_window() -> None:
    y = torch.zeros(5_000)
    y[17] = 1.0
    sample = threshold_sample(y, 100)
    assert sample.numel() == 100 and 17 in sample.tolist()
    assert threshold_sample(torch.zeros(5_000), 100).numel() == 100  # one class only: still a sample


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        threshold_sample(torch.zeros(4), 0)
