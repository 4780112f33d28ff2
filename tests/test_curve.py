"""search.training.curve: how a validation curve becomes a trial's value and its kept epoch."""

from __future__ import annotations

import math
import random

import pytest

from search.training.curve import SELECTION_RULES, curve_value, smoothed_curve

nan = math.nan
LUCKY_SPIKE = [0.91, 0.50, 0.50, 0.50, 0.50]  # a model that never trained, lucky at epoch 1
STEADY = [0.60, 0.70, 0.80, 0.82, 0.83]


def test_a_lucky_first_epoch_wins_under_best_but_not_under_smoothed() -> None:
    assert curve_value(LUCKY_SPIKE, "best") == (0.91, 1)
    assert curve_value(STEADY, "best") == (0.83, 5)
    spike_value, spike_epoch = curve_value(LUCKY_SPIKE, "smoothed", 3)
    steady_value, steady_epoch = curve_value(STEADY, "smoothed", 3)
    assert spike_value == pytest.approx((0.91 + 0.5 + 0.5) / 3) and spike_epoch == 3
    assert steady_value == pytest.approx((0.80 + 0.82 + 0.83) / 3) and steady_epoch == 5
    assert steady_value > spike_value


def test_smoothed_curve_is_the_trailing_mean_of_whole_windows() -> None:
    smooth = smoothed_curve([1.0, 2.0, 3.0, 4.0, 8.0], 3)
    assert math.isnan(smooth[0]) and math.isnan(smooth[1])
    assert smooth[2:] == [2.0, 3.0, 5.0]
    assert smoothed_curve([1.0, 2.0], 1) == [1.0, 2.0]


def test_last_is_the_final_epoch() -> None:
    assert curve_value(LUCKY_SPIKE, "last") == (0.5, 5)
    assert curve_value([0.3], "last") == (0.3, 1)


def test_a_run_shorter_than_the_window_is_one_window() -> None:
    assert curve_value([0.9, 0.6], "smoothed", 3) == (pytest.approx(0.75), 2)
    assert curve_value([0.4], "smoothed", 3) == (0.4, 1)
    assert smoothed_curve([0.9, 0.6], 3)[1] == pytest.approx(0.75)


def test_nan_never_beats_a_number() -> None:
    assert curve_value([nan, 0.5, 0.6, nan], "best") == (0.6, 3)
    value, epoch = curve_value([nan, nan], "best")
    assert math.isnan(value) and epoch == 1
    # a NaN inside a window makes the window NaN; the one whole-number window wins
    assert curve_value([0.9, nan, 0.5, 0.5, 0.5], "smoothed", 3) == (0.5, 5)
    value, epoch = curve_value([nan, nan, nan, nan], "smoothed", 3)
    assert math.isnan(value) and epoch == 3
    value, epoch = curve_value([0.7, nan], "last")
    assert math.isnan(value) and epoch == 2


def test_ties_go_to_the_earliest_epoch() -> None:
    assert curve_value([0.5, 0.8, 0.8, 0.7], "best") == (0.8, 2)
    assert curve_value([0.5, 0.5, 0.5, 0.5, 0.5], "smoothed", 2) == (0.5, 2)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="selection rule 'max'"):
        curve_value([0.5], "max")
    with pytest.raises(ValueError, match="at least one epoch"):
        curve_value([], "best")
    with pytest.raises(ValueError, match="at least 1 epoch"):
        smoothed_curve([0.5], 0)


@pytest.mark.parametrize("rule", SELECTION_RULES)
def test_the_pick_of_a_longer_curve_was_already_the_pick_when_its_epoch_ended(rule) -> None:
    # The loop copies the weights when an epoch is picked; this is why that copy is the one it needs.
    rng = random.Random(0)
    for _ in range(300):
        n, k = rng.randint(1, 9), rng.randint(1, 4)
        values = [rng.choice([nan, round(rng.random(), 1)]) if rng.random() < 0.2 else rng.random() for _ in range(n)]
        _, epoch = curve_value(values, rule, k)
        assert curve_value(values[:epoch], rule, k)[1] == epoch, (values, k)
