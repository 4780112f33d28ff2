"""Where a new study begins: an earlier study's best configurations (warm starts), else the space's own
starting points (the family defaults, spaces/starting.py), become its first trials.

The earlier study may have searched another space, another dataset, or data since changed. Each of its
best configurations is replayed through the new space once, before anything is enqueued: a parameter
the new space asks for and the old value fits is kept; a number outside the new range is clamped into
it; a parameter the new space does not have, or a choice it no longer offers, is dropped (the sampler
chooses it when the trial runs). What was taken, adapted and dropped is returned and stored with the
study. The configurations are enqueued once, when the study is created, as WAITING trials: each is
taken by exactly one worker (Optuna hands a waiting trial to one process), and counts in the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import spaces
from search.errors import UsageError
from studies import (
    STARTING_POINT_ATTR,
    StudyNotFound,
    is_infeasible,
    mask_secrets,
    open_existing_storage,
    quality_value,
)

# The user attr naming the earlier trial a warm-start trial replays (`study#number`).
WARM_START_ATTR = "warm_start_from"


@dataclass
class WarmConfig:
    """One earlier trial as the new space sees it."""

    source_number: int
    source_value: float
    params: dict[str, Any]
    adapted: list[str] = field(default_factory=list)  # `name: old -> new` for clamped numbers
    dropped: list[str] = field(default_factory=list)  # parameters the new space does not take as they were

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.source_number,
            "value": self.source_value,
            "adapted": self.adapted,
            "dropped": self.dropped,
        }


class _ReplayTrial:
    """Stands in for a trial while the new space samples: answers each parameter from the earlier trial when
    the value fits (clamped when a number is out of range), else with the first choice or the low end, which
    only lets the space go on (those parameters are left to the sampler)."""

    def __init__(self, source: dict[str, Any]) -> None:
        self.source = source
        self.kept: dict[str, Any] = {}
        self.adapted: list[str] = []

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        choices = list(choices)
        if name in self.source and self.source[name] in choices:
            self.kept[name] = self.source[name]
            return self.source[name]
        return choices[0]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self._number(name, low, high, step=step, integer=True))

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return float(self._number(name, low, high, step=step, integer=False))

    def _number(self, name: str, low: float, high: float, *, step: float | None, integer: bool) -> float:
        value = self.source.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            return low
        fitted = min(max(value, low), high)
        if step:  # onto the grid of the new range
            fitted = min(low + round((fitted - low) / step) * step, high)
        fitted = round(fitted) if integer else float(fitted)
        if fitted != value:
            self.adapted.append(f"{name}: {value!r} -> {fitted!r}")
        self.kept[name] = fitted
        return fitted


def replay(source: FrozenTrial, space: spaces.SearchSpace, ctx: spaces.SpaceContext) -> WarmConfig:
    """The earlier trial's parameters that the new space takes, as `enqueue_trial` should get them."""
    kept, adapted, dropped = replay_params(dict(source.params), space, ctx)
    value = quality_value(source)
    return WarmConfig(source.number, float(value or math.nan), kept, adapted, dropped)


def replay_params(
    params: dict[str, Any], space: spaces.SearchSpace, ctx: spaces.SpaceContext
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(the parameters `space` takes from `params`, `name: old -> new` for clamped numbers, names it drops)."""
    stand_in = _ReplayTrial(params)
    space(stand_in, ctx)  # type: ignore[arg-type]  (the spaces only call suggest_*)
    return stand_in.kept, stand_in.adapted, sorted(name for name in params if name not in stand_in.kept)


def enqueue_starting_points(study: optuna.Study, *, space: spaces.SearchSpace, ctx: spaces.SpaceContext) -> list[str]:
    """Enqueue the space's starting points as `study`'s next trials; what each is."""
    enqueued = []
    for name, point in space.starting_points(ctx):
        kept, _adapted, dropped = replay_params(point, space, ctx)
        if dropped:  # a space/starting-point mismatch is a bug here, not something to run half-way
            raise ValueError(f"starting point {name!r} of space {space.name!r}: the space does not take {dropped}")
        study.enqueue_trial(kept, user_attrs={STARTING_POINT_ATTR: name}, skip_if_exists=True)
        enqueued.append(name)
    return enqueued


def best_source_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The `top` best feasible COMPLETE trials of `study` by its quality objective (its first value)."""
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values and math.isfinite(t.values[0]) and not is_infeasible(t)
    ]
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: t.values[0], reverse=maximize)[:top]


def load_source_study(storage_url: str, study_name: str) -> optuna.Study:
    """The earlier study; a usage error naming the studies there when it does not exist."""
    storage = open_existing_storage(storage_url)
    try:
        return optuna.load_study(storage=storage, study_name=study_name)
    except KeyError:
        names = ", ".join(sorted(optuna.get_all_study_names(storage=storage))) or "none"
        raise StudyNotFound(
            f"--warm-start-from {study_name!r}: no such study in {mask_secrets(storage_url)} (studies there: {names})"
        ) from None


def enqueue_warm_start(
    study: optuna.Study, *, source: optuna.Study, top: int, space: spaces.SearchSpace, ctx: spaces.SpaceContext
) -> list[WarmConfig]:
    """Enqueue the earlier study's `top` best configurations, adapted to `space`, as `study`'s next trials."""
    configs = [replay(trial, space, ctx) for trial in best_source_trials(source, top)]
    if not configs:
        raise UsageError(f"--warm-start-from {source.study_name!r}: that study has no COMPLETE trial to start from")
    for config in configs:
        study.enqueue_trial(
            config.params,
            user_attrs={WARM_START_ATTR: f"{source.study_name}#{config.source_number}"},
            skip_if_exists=True,
        )
    return configs
