"""Questions asked of a study's trials, answered once: the budget, states, the best trial, a chosen trial.

The budget is the whole study's: COMPLETE + PRUNED trials on the database, across every worker.
"""

from __future__ import annotations

import math
import operator
import re
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.definition import StudyMismatch, read_definition

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
# Trials that hold a place in the budget while they run or once they are done.
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class NoCompletedTrial(LookupError):
    """The study has no COMPLETE trial to act on yet; the message says what it has."""

    exit_code = 6  # search.errors.EXIT_NOTHING_TO_DO (studies cannot import search)


class TrialNotUsable(ValueError):
    """The trial asked for does not exist or is not COMPLETE; the message says which exist."""

    exit_code = 2  # search.errors.EXIT_USAGE


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Number of trials in each state, by state name (every state present, zero included)."""
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


def count_budget(study: optuna.Study) -> tuple[dict[str, int], int]:
    """One read of the trials: the number in each state (as `count_trials`) and the trials in the budget
    (as `trials_used`: COMPLETE + PRUNED, less the infeasible ones stopped before training)."""
    counts = {state.name: 0 for state in TrialState}
    used = 0
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
        used += trial.state in FINISHED_STATES and not is_infeasible(trial)
    return counts, used


def describe_counts(counts: dict[str, int]) -> str:
    """`3 complete, 1 pruned` for the states present, or `no trials`."""
    return ", ".join(f"{n} {state.lower()}" for state, n in counts.items() if n) or "no trials"


def trials_used(study: optuna.Study) -> int:
    """Trials that have spent the budget: COMPLETE + PRUNED, counted on the database.

    FAIL trials do not count: an invalid architecture, a diverged run or a dead worker's trial
    (re-queued as a copy by the heartbeat callback) leaves its place in the budget to another trial.
    Nor do infeasible ones: stopped before training (PRUNED, so the sampler learns from them), they
    spent no training.
    """
    return sum(not is_infeasible(t) for t in study.get_trials(deepcopy=False, states=FINISHED_STATES))


def is_infeasible(trial: FrozenTrial) -> bool:
    """Whether a constraint of the trial is violated (Optuna's rule: feasible when every value is <= 0)."""
    return any(value > 0 for value in trial.constraints.values())


def quality_value(trial: FrozenTrial) -> float | None:
    """The trial's quality objective (its first value in a multi-objective study), None without values."""
    return float(trial.values[0]) if trial.values else None


def _scored(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The feasible COMPLETE trials whose every value is finite."""
    return [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.values
        and all(math.isfinite(v) for v in t.values)
        and not is_infeasible(t)
    ]


def pareto_front(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """The feasible COMPLETE trials no other one dominates, ordered by their first cost (cheapest first).

    A single-objective study's front is its best trial.
    """
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if trials is None else trials
    scored = _scored(trials)
    if len(study.directions) == 1:
        best = best_trial(study, scored)
        return [] if best is None else [best]
    signs = [-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
    losses = {t.number: [s * v for s, v in zip(signs, t.values, strict=True)] for t in scored}

    def dominated(trial: FrozenTrial) -> bool:
        mine = losses[trial.number]
        return any(
            all(o <= m for o, m in zip(other, mine, strict=True)) and other != mine
            for number, other in losses.items()
            if number != trial.number
        )

    return sorted((t for t in scored if not dominated(t)), key=lambda t: (t.values[1], -signs[0] * t.values[0]))


def budget_of(study: optuna.Study) -> int | None:
    """The budget as the study stores it now: `start --trials` may have raised it since creation."""
    return read_definition(study).trials_budget


def trials_remaining(study: optuna.Study, budget: int | None) -> int | None:
    """How many more trials the budget allows; None when the study has no budget."""
    if budget is None:
        return None
    return max(0, budget - trials_used(study))


def best_trial(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> FrozenTrial | None:
    """The best feasible COMPLETE trial with finite values (of `trials` when given), None when there is none.

    In a multi-objective study: the best on the quality objective (the front's most accurate point).
    """
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if trials is None else trials
    scored = _scored(trials)
    if not scored:
        return None
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return (max if maximize else min)(scored, key=lambda t: t.values[0])


def select_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial `number`, which must be COMPLETE (`studies.select_export` chooses one when none is named)."""
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    if number not in by_number:
        span = f"0..{max(by_number)}" if by_number else "none"
        raise TrialNotUsable(f"--trial {number}: study {study.study_name!r} has no such trial (trials: {span})")
    trial = by_number[number]
    if trial.state != TrialState.COMPLETE:
        best = best_trial(study, trials)
        hint = f"; the best COMPLETE trial is {best.number}" if best is not None else ""
        raise TrialNotUsable(
            f"--trial {number}: the trial is {trial.state.name}, only a COMPLETE trial can be retrained{hint}"
        )
    return trial


def trial_config(trial: FrozenTrial) -> dict[str, Any]:
    """The flat config a worker stored on the trial."""
    config = trial.user_attrs.get("config")
    if not isinstance(config, dict) or "family" not in config:
        raise StudyMismatch(
            f"trial {trial.number} has no usable user attribute 'config' (a flat config dict with "
            "'family'); it was not written by an ecgsearch worker"
        )
    return dict(config)


def trial_family(trial: FrozenTrial) -> str | None:
    """The architecture family of a trial: user attr, else the sampled param, else its config."""
    family = trial.user_attrs.get("family") or trial.params.get("family")
    if not family and isinstance(trial.user_attrs.get("config"), dict):
        family = trial.user_attrs["config"].get("family")
    return str(family) if family else None


_RULE = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|<|>)\s*([-+0-9.eE_]+)\s*$")
_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def trial_objectives(trial: FrozenTrial, metric_names: list[str]) -> dict[str, float]:
    """Every value a rule can name: the study's values under its metric names, then the trial's measured costs."""
    values = dict(zip(metric_names, map(float, trial.values or []), strict=False))
    for name, cost in (trial.user_attrs.get("cost") or {}).items():
        values.setdefault(name, float(cost))
    return values


def parse_pick(text: str, known: list[str]) -> list[tuple[str, str, float]]:
    """`latency_ms<5,params<=100000` -> [(name, op, limit)]; ValueError saying what was expected."""
    rules = []
    for part in text.split(","):
        match = _RULE.match(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not a rule; expected NAME<VALUE (or <=, >, >=), e.g. latency_ms<5")
        name, op, limit = match.groups()
        if name not in known:
            raise ValueError(f"{part.strip()!r}: no value named {name!r}; known: {', '.join(known)}")
        rules.append((name, op, float(limit.replace("_", ""))))
    return rules


def pick_trial(study: optuna.Study, metric_names: list[str], text: str) -> FrozenTrial:
    """The most accurate trial that satisfies every rule in `text`, taken from the Pareto front when one
    satisfies them (a front point is the best quality for its cost), else from every feasible COMPLETE trial.

    `TrialNotUsable` (a usage error) for a malformed rule, or when no trial satisfies them.
    """
    completed = _scored(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    known = sorted({*metric_names, *(name for t in completed for name in trial_objectives(t, metric_names))})
    try:
        rules = parse_pick(text, known or metric_names)
    except ValueError as error:
        raise TrialNotUsable(f"--pick {text!r}: {error}") from None

    def satisfies(trial: FrozenTrial) -> bool:
        values = trial_objectives(trial, metric_names)
        return all(name in values and _COMPARE[op](values[name], limit) for name, op, limit in rules)

    for pool in (pareto_front(study, completed), completed):
        chosen = best_trial(study, [t for t in pool if satisfies(t)])
        if chosen is not None:
            return chosen
    raise TrialNotUsable(
        f"--pick {text!r}: none of the {len(completed)} completed feasible trials satisfies it; "
        "`ecgsearch status` lists the Pareto front"
    )
