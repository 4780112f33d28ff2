"""Which trial `retrain` exports when none is named: `studies.select_export`'s `best` and `confirmed` rules."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from studies import STARTING_POINT_ATTR, NoCompletedTrial, paired_lead_t, select_export
from studies.selection import critical_t

STARTING = [0.90, 0.70, 0.95, 0.80]  # a starting point's four fold values: the folds differ by far more than configs


def _study(*trials: tuple[float, list[float] | None, str | None], direction: str = "maximize") -> optuna.Study:
    """A study of COMPLETE trials given as (value, fold values, starting point name or None), in order."""
    study = optuna.create_study(direction=direction)
    for value, folds, starting in trials:
        attrs = {} if folds is None else {"cv_fold_values": folds}
        if starting is not None:
            attrs[STARTING_POINT_ATTR] = starting
        study.add_trial(
            create_trial(value=value, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, user_attrs=attrs)
        )
    return study


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_paired_lead_t_is_the_mean_difference_over_its_standard_error():
    # Differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, standard error 0.1 / sqrt(3).
    assert paired_lead_t([0.6, 0.7, 0.8], [0.5, 0.5, 0.5]) == pytest.approx(0.2 / (0.1 / math.sqrt(3)))
    # Minimising: a lower value leads.
    assert paired_lead_t([0.4, 0.3, 0.2], [0.5, 0.5, 0.5], maximize=False) == pytest.approx(2 * math.sqrt(3))
    assert paired_lead_t([0.6, 0.7], [0.5, 0.6]) == math.inf  # a constant lead
    assert paired_lead_t([0.5, 0.6], [0.5, 0.6]) == 0.0
    assert paired_lead_t([0.5], [0.4]) is None  # one fold: no spread to judge by
    assert paired_lead_t([0.5, 0.6], [0.4]) is None
    assert paired_lead_t([0.5, math.nan], [0.4, 0.5]) is None


def test_critical_t_is_students_one_sided_five_percent():
    assert critical_t(4) == pytest.approx(2.353, abs=1e-3)
    assert critical_t(5) == pytest.approx(2.132, abs=1e-3)


def test_a_lead_that_varies_across_folds_keeps_the_starting_point():
    # The best trial leads by 0.0375 on the mean but by -0.04 to +0.09 per fold: 1.35 standard errors.
    lucky = [0.99, 0.66, 0.99, 0.86]
    study = _study(
        (_mean([0.85, 0.60, 0.90, 0.70]), [0.85, 0.60, 0.90, 0.70], "cnn defaults"),
        (_mean(STARTING), STARTING, "cnn defaults + rhythm branch"),
        (_mean(lucky), lucky, None),
    )
    assert select_export(study, "best").trial.number == 2
    chosen = select_export(study, "confirmed")
    assert chosen.trial.number == 1  # the starting point the space recommends: listed (so enqueued) last
    assert chosen.lead_t == pytest.approx(paired_lead_t(lucky, STARTING))
    assert chosen.lead_t < chosen.needed_t == pytest.approx(critical_t(4))
    assert "not confirmed" in chosen.reason and "trial 1" in chosen.reason


def test_the_incumbent_is_the_recommended_starting_point_even_where_a_plainer_one_scored_higher():
    # The family's plain defaults won the folds by luck (measured: they then lost on held-out patients by 0.3).
    plain = [0.99, 0.66, 0.99, 0.86]
    study = _study(
        (_mean(plain), plain, "cnn defaults"),
        (_mean(STARTING), STARTING, "cnn defaults + rhythm branch"),
    )
    chosen = select_export(study, "confirmed")
    assert chosen.trial.number == 1 and chosen.lead_t == pytest.approx(paired_lead_t(plain, STARTING))
    # Where the recommended point did not complete (pruned, or over a cap), the one listed before it stands in.
    study = _study((_mean(plain), plain, "cnn defaults"))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={STARTING_POINT_ATTR: "with rhythm branch"}))
    study.add_trial(
        create_trial(
            value=0.99, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
            user_attrs={"cv_fold_values": [v + 0.1 for v in plain]},
        )
    )  # fmt: skip
    chosen = select_export(study, "confirmed")
    assert chosen.trial.number == 2 and "trial 0" in chosen.reason  # a constant lead: confirmed


def test_a_lead_on_every_fold_beyond_its_spread_displaces_the_starting_point():
    steady = [v + d for v, d in zip(STARTING, (0.03, 0.04, 0.02, 0.035), strict=True)]
    study = _study((_mean(STARTING), STARTING, "cnn defaults"), (_mean(steady), steady, None))
    chosen = select_export(study, "confirmed")
    assert chosen.trial.number == 1 and chosen.lead_t > chosen.needed_t
    assert "is confirmed" in chosen.reason


def test_minimised_objectives_are_led_downwards():
    lower = [v - d for v, d in zip(STARTING, (0.03, 0.04, 0.02, 0.035), strict=True)]
    noisy = [v - d for v, d in zip(STARTING, (0.20, -0.10, 0.15, -0.05), strict=True)]
    study = _study((_mean(STARTING), STARTING, "defaults"), (_mean(lower), lower, None), direction="minimize")
    assert select_export(study, "confirmed").trial.number == 1
    study = _study((_mean(STARTING), STARTING, "defaults"), (_mean(noisy), noisy, None), direction="minimize")
    assert select_export(study, "confirmed").trial.number == 0


def test_without_something_to_test_against_the_rule_is_the_best_trial():
    better = [v + 0.01 for v in STARTING]
    # Not cross-validated: no fold values.
    chosen = select_export(_study((0.8, None, "cnn defaults"), (0.9, None, None)), "confirmed")
    assert chosen.trial.number == 1 and "without --cv" in chosen.reason
    # No starting point (started with --no-starting-points, or resumed from a warm start).
    chosen = select_export(_study((0.8, STARTING, None), (0.9, better, None)), "confirmed")
    assert chosen.trial.number == 1 and "no starting point" in chosen.reason
    # A fold without a value (one class only in its held-out windows) leaves nothing to pair.
    chosen = select_export(_study((0.8, STARTING, "cnn defaults"), (0.9, [*better[:3], math.nan], None)), "confirmed")
    assert chosen.trial.number == 1 and "cannot be paired" in chosen.reason
    # The best trial is the starting point itself.
    chosen = select_export(_study((0.9, better, "cnn defaults"), (0.8, STARTING, None)), "confirmed")
    assert chosen.trial.number == 0 and chosen.lead_t is None


def test_pruned_failed_and_infeasible_starting_points_are_not_incumbents():
    study = _study((0.9, [0.9, 0.9, 0.9], None))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={STARTING_POINT_ATTR: "cnn defaults"}))
    study.add_trial(
        create_trial(
            value=0.95,
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0, 1)},
            user_attrs={STARTING_POINT_ATTR: "too big", "cv_fold_values": [0.95, 0.95, 0.95]},
            constraints={"max_params": 1.0},  # over a cap: infeasible
        )
    )
    chosen = select_export(study, "confirmed")
    assert chosen.trial.number == 0 and "no starting point" in chosen.reason


def test_an_empty_study_says_what_it_has():
    with pytest.raises(NoCompletedTrial, match="no COMPLETE trial"):
        select_export(optuna.create_study(), "confirmed")
    with pytest.raises(ValueError, match="expected one of best, confirmed"):
        select_export(_study((0.9, None, None)), "luck")


def test_start_says_which_trial_retrain_exports_where_it_is_not_the_best(capsys):
    from search.cli.start import _print_outcome

    lucky = [0.99, 0.66, 0.99, 0.86]
    _print_outcome(_study((_mean(STARTING), STARTING, "cnn defaults"), (_mean(lucky), lucky, None)))
    printed = " ".join(capsys.readouterr().out.split())
    assert "best trial #1" in printed and "retrain exports trial #0: the best trial, 1, is not confirmed" in printed
    steady = [v + 0.03 for v in STARTING]
    _print_outcome(_study((_mean(STARTING), STARTING, "cnn defaults"), (_mean(steady), steady, None)))
    assert "retrain exports" not in capsys.readouterr().out


def test_status_names_the_trial_retrain_exports_where_it_is_not_the_best(make_definition):
    from studies import summarise

    lucky = [0.99, 0.66, 0.99, 0.86]
    summary = summarise(
        _study((_mean(STARTING), STARTING, "cnn defaults"), (_mean(lucky), lucky, None)), make_definition()
    )
    assert summary.best.number == 1 and summary.exported[0] == 0 and "not confirmed" in summary.exported[1]
    steady = [v + 0.03 for v in STARTING]
    summary = summarise(
        _study((_mean(STARTING), STARTING, "cnn defaults"), (_mean(steady), steady, None)), make_definition()
    )
    assert summary.best.number == 1 and summary.exported is None
