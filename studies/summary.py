"""Where a study stands: trials by state, the best so far, and which workers are alive (data only; the CLI
renders it)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc

from studies.definition import USER_ATTR_KEY, StudyDefinition
from studies.selection import exported_instead_of_best
from studies.trials import (
    best_trial,
    count_trials,
    is_infeasible,
    pareto_front,
    quality_value,
    trial_family,
    trials_remaining,
)


@dataclass
class RunningTrial:
    number: int
    worker_host: str | None
    worker_pid: int | None
    device: str | None
    epoch: int | None
    # Seconds since the worker last wrote `heartbeat_at` (its own per-epoch mark).
    heartbeat_age_s: float | None
    # Seconds since Optuna's storage heartbeat for the trial; the one that fails stale trials.
    storage_heartbeat_age_s: float | None
    family: str | None
    retried_from: int | None


@dataclass
class BestTrial:
    number: int
    value: float
    params: dict[str, Any]
    family: str | None
    config: dict[str, Any] | None


@dataclass
class FrontPoint:
    """One trial on the Pareto front: its values under the study's metric names."""

    number: int
    values: dict[str, float]
    family: str | None


@dataclass
class StudySummary:
    study_name: str
    definition: StudyDefinition
    counts: dict[str, int]
    n_trials: int
    trials_remaining: int | None
    best: BestTrial | None
    running: list[RunningTrial] = field(default_factory=list)
    # Multi-objective studies: the feasible trials no other dominates, cheapest first.
    front: list[FrontPoint] = field(default_factory=list)
    # PRUNED before training because a constraint was violated (outside the budget).
    n_infeasible: int = 0
    # Where `retrain` would export another trial than the best (`studies.select_export`): its number and why.
    exported: tuple[int, str] | None = None


@dataclass
class StudyListing:
    name: str
    n_trials: int
    best_value: float | None
    created_at: str | None
    # None for studies not created by ecgsearch (they share the storage but not the tool).
    space: str | None
    objective: str | None
    direction: str | None


def summarise(study: optuna.Study, definition: StudyDefinition) -> StudySummary:
    counts = count_trials(study)
    running_trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    storage_ages = _storage_heartbeat_ages(study, [trial._trial_id for trial in running_trials])
    now = time.time()
    running = [
        RunningTrial(
            number=trial.number,
            worker_host=_optional(trial.user_attrs.get("worker_host"), str),
            worker_pid=_optional(trial.user_attrs.get("worker_pid"), int),
            device=_optional(trial.user_attrs.get("device"), str),
            epoch=_optional(trial.user_attrs.get("epoch"), int),
            heartbeat_age_s=_age(now, trial.user_attrs.get("heartbeat_at")),
            storage_heartbeat_age_s=storage_ages.get(trial._trial_id),
            family=trial_family(trial),
            retried_from=_optional(trial.system_attrs.get("failed_trial"), int),
        )
        for trial in running_trials
    ]
    return StudySummary(
        study_name=study.study_name,
        definition=definition,
        counts=counts,
        n_trials=sum(counts.values()),
        trials_remaining=trials_remaining(study, definition.trials_budget),
        best=_best(study),
        running=running,
        front=front_points(study, definition) if definition.is_multi_objective else [],
        n_infeasible=sum(is_infeasible(t) for t in study.get_trials(deepcopy=False)),
        exported=_exported(study),
    )


def _exported(study: optuna.Study) -> tuple[int, str] | None:
    chosen = exported_instead_of_best(study)
    return None if chosen is None else (chosen.trial.number, chosen.reason)


def front_points(study: optuna.Study, definition: StudyDefinition) -> list[FrontPoint]:
    names = definition.metric_names()
    return [
        FrontPoint(trial.number, dict(zip(names, map(float, trial.values), strict=True)), trial_family(trial))
        for trial in pareto_front(study)
    ]


def list_studies(storage: optuna.storages.BaseStorage | str) -> list[StudyListing]:
    """Every study in the storage, oldest first."""
    listings = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=True):
        stored = summary.user_attrs.get(USER_ATTR_KEY)
        stored = stored if isinstance(stored, dict) else {}
        best_value = summary.best_trial.value if summary.best_trial is not None else None
        started = summary.datetime_start.isoformat(timespec="seconds") if summary.datetime_start else None
        listings.append(
            StudyListing(
                name=summary.study_name,
                n_trials=summary.n_trials,
                best_value=best_value,
                created_at=stored.get("created_at") or started,
                space=stored.get("space"),
                objective=stored.get("objective"),
                direction=stored.get("direction"),
            )
        )
    return listings


def _best(study: optuna.Study) -> BestTrial | None:
    trial = best_trial(study)
    if trial is None:
        return None
    config = trial.user_attrs.get("config")
    return BestTrial(
        number=trial.number,
        value=float(quality_value(trial)),
        params=dict(trial.params),
        family=trial_family(trial),
        config=config if isinstance(config, dict) else None,
    )


def _storage_heartbeat_ages(study: optuna.Study, trial_ids: list[int]) -> dict[int, float]:
    """Seconds since Optuna's own heartbeat per trial id; empty where the storage has none."""
    if not trial_ids:
        return {}
    # Optuna wraps an RDBStorage in a cache; the heartbeat table is only reachable beneath it.
    storage = getattr(study._storage, "_backend", study._storage)
    if not isinstance(storage, optuna.storages.RDBStorage):
        return {}
    query = sqlalchemy.text("SELECT trial_id, heartbeat FROM trial_heartbeats WHERE trial_id IN :ids").bindparams(
        sqlalchemy.bindparam("ids", expanding=True)
    )
    query = query.columns(trial_id=sqlalchemy.Integer, heartbeat=sqlalchemy.DateTime)
    try:
        with storage.engine.connect() as connection:
            # The database's clock, as Optuna compares heartbeats with it, not this machine's.
            now = connection.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one()
            rows = connection.execute(query, {"ids": trial_ids}).all()
    except sqlalchemy.exc.SQLAlchemyError:
        return {}
    now = now.replace(tzinfo=None)
    return {trial_id: max(0.0, (now - beat).total_seconds()) for trial_id, beat in rows}


def _age(now: float, timestamp: Any) -> float | None:
    if not isinstance(timestamp, int | float):
        return None
    return max(0.0, now - float(timestamp))


def _optional(value: Any, kind: type) -> Any:
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None
