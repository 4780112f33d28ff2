"""Which trial a study exports when none is named: the best value, or the best only where the folds confirm it.

A search's best value is the maximum over many trials of a noisy figure, so it is biased upward by about the
margin it wins by (the winner's curse). Under patient-grouped cross-validation the noise is the patients: folds
differ by far more than configs do. `confirmed` keeps the space's recommended starting point as the incumbent
and exports the best trial instead only where its per-fold lead over the incumbent passes a one-sided paired
t-test. Pairing removes what a fold's patients do to both trials; what is left is the lead against its own
spread across folds.

The incumbent is the starting point the space lists last (`spaces.starting`: plainest first, the one it
recommends last, e.g. the family defaults with the rhythm branch), not the best-valued one: measured with
`bench/nested_search.py`, the family's plain defaults can win the inner folds by luck as any trial can, and the
rule must not hand the winner's curse back through the incumbent.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.trials import NoCompletedTrial, _scored, best_trial, describe_counts

# The user attr naming the space's starting point a trial runs (e.g. "cnn defaults"); set when it is enqueued.
STARTING_POINT_ATTR = "starting_point"
# A cross-validated trial's value on each fold, in fold order (set by the objective under `--cv`).
FOLD_VALUES_ATTR = "cv_fold_values"

SELECTIONS = ("best", "confirmed")
# How `ecgsearch retrain` chooses the trial when no --trial, --pick or --select names one. Chosen with
# bench/nested_search.py on held-out training patients (bench/RESULTS.md §9); a study without --cv or without
# starting points gets its best trial either way.
DEFAULT_SELECTION = "confirmed"
# One-sided: a challenger must lead, not merely differ. 0.05 is the conventional level, fixed before the rule
# was measured (bench/nested_search.py), not tuned on any dataset.
CONFIRM_ALPHA = 0.05


@dataclass(frozen=True)
class Selection:
    """The trial to export and why, in a sentence a user can check against `ecgsearch status`."""

    trial: FrozenTrial
    best: FrozenTrial  # the best-valued trial, which `trial` is unless the rule kept the incumbent
    rule: str
    reason: str
    lead_t: float | None = None  # the best trial's paired lead over the incumbent, in standard errors
    needed_t: float | None = None  # the critical t it had to pass


def paired_lead_t(challenger: Sequence[float], incumbent: Sequence[float], *, maximize: bool = True) -> float | None:
    """The challenger's per-fold lead over the incumbent in standard errors: mean / (sd / sqrt(K)) of the paired
    differences (signed so that a lead is positive). None where undefined: unequal or fewer than 2 folds, or a
    non-finite value. No spread gives +-inf for a constant lead, 0 for none."""
    if len(challenger) != len(incumbent) or len(challenger) < 2:
        return None
    sign = 1.0 if maximize else -1.0
    differences = [sign * (float(a) - float(b)) for a, b in zip(challenger, incumbent, strict=True)]
    if not all(math.isfinite(d) for d in differences):
        return None
    mean, spread = statistics.fmean(differences), statistics.stdev(differences)
    if spread == 0:
        return 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return mean / (spread / math.sqrt(len(differences)))


def critical_t(folds: int, alpha: float = CONFIRM_ALPHA) -> float:
    """The one-sided critical value of Student's t with folds-1 degrees of freedom (2.353 at 4 folds, 2.132 at 5)."""
    from scipy.stats import t as student_t

    return float(student_t.ppf(1.0 - alpha, folds - 1))


def select_export(study: optuna.Study, rule: str = "best") -> Selection:
    """The trial `ecgsearch retrain` exports when no --trial or --pick names one, by `rule` (one of SELECTIONS).

    `best`: the best feasible COMPLETE trial. `confirmed`: the recommended starting point (the last the space
    lists that completed; they are enqueued, so numbered, in the space's order) unless the best trial's per-fold
    lead over it passes the one-sided paired t-test at CONFIRM_ALPHA; a study without per-fold values (not
    `--cv`) or without a COMPLETE starting point has nothing to test against and gets the best trial.
    """
    if rule not in SELECTIONS:
        raise ValueError(f"unknown selection rule {rule!r}; expected one of {', '.join(SELECTIONS)}")
    trials = study.get_trials(deepcopy=False)
    scored = _scored(trials)
    best = best_trial(study, scored)
    if best is None:
        counts = {state.name: sum(t.state == state for t in trials) for state in TrialState}
        raise NoCompletedTrial(
            f"study {study.study_name!r} has no COMPLETE trial yet ({describe_counts(counts)}); "
            "let `ecgsearch start` or `ecgsearch worker` finish at least one trial first"
        )
    if rule == "best":
        return Selection(best, best, rule, f"trial {best.number} has the best value")
    incumbent = max((t for t in scored if STARTING_POINT_ATTR in t.user_attrs), key=lambda t: t.number, default=None)
    if incumbent is None:
        return Selection(
            best, best, rule, f"no starting point completed to test against: the best trial, {best.number}"
        )
    name = incumbent.user_attrs[STARTING_POINT_ATTR]
    if incumbent.number == best.number:
        return Selection(best, best, rule, f"the best trial, {best.number}, is the starting point {name!r}")
    challenger_folds = best.user_attrs.get(FOLD_VALUES_ATTR) or []
    incumbent_folds = incumbent.user_attrs.get(FOLD_VALUES_ATTR) or []
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    lead_t = paired_lead_t(challenger_folds, incumbent_folds, maximize=maximize)
    if lead_t is None:
        why = (
            "per-fold values that cannot be paired" if challenger_folds else "no per-fold values (a study without --cv)"
        )
        return Selection(best, best, rule, f"{why} to test against the starting point: the best trial, {best.number}")
    needed = critical_t(len(challenger_folds))
    lead = f"its lead over the starting point {name!r} (trial {incumbent.number}) across {len(challenger_folds)} folds"
    if lead_t > needed:
        reason = f"trial {best.number} is confirmed: {lead} is {lead_t:.2f} standard errors (> {needed:.2f} needed)"
        return Selection(best, best, rule, reason, lead_t, needed)
    reason = (
        f"the best trial, {best.number}, is not confirmed: {lead} is {lead_t:.2f} standard errors "
        f"(<= {needed:.2f} needed, one-sided p >= {CONFIRM_ALPHA}), so the starting point, trial {incumbent.number}"
    )
    return Selection(incumbent, best, rule, reason, lead_t, needed)


def exported_instead_of_best(study: optuna.Study) -> Selection | None:
    """What `retrain` exports by the default rule where that is not the best trial (for `start` and `status` to
    say so); None where it is, or where no trial has completed."""
    try:
        chosen = select_export(study, DEFAULT_SELECTION)
    except NoCompletedTrial:
        return None
    return None if chosen.trial.number == chosen.best.number else chosen
