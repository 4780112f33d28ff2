"""The MLflow side of a study as a function of the study database: what each trial's run and the parent run
should hold, computed from Optuna trials alone (no MLflow I/O here).

The live mirror and `mlflow-sync` both write exactly this, through `runs.apply_update`, which logs only
what a run lacks. Every metric point carries a timestamp derived from the trial (its start plus the
epoch seconds so far, its completion), so the same point sent twice, by two writers, is the same row.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.tracking import names, plots
from search.tracking.runs import Point, RunUpdate, clean_key, tag_value, trial_params
from studies import FOLD_VALUES_ATTR, best_trial, is_infeasible, pareto_front, quality_value

# Trial user attrs (written by the worker) -> child-run tags.
ATTR_TAGS = {
    "worker_host": names.TAG_WORKER_HOST,
    "worker_pid": names.TAG_WORKER_PID,
    "device": names.TAG_DEVICE,
    "family": names.TAG_FAMILY,
    "retried_from": names.TAG_RETRIED_FROM,
    "pruned_at_epoch": names.TAG_PRUNED_AT_EPOCH,
    "fail_reason": names.TAG_FAIL_REASON,
    "cv_epoch": names.TAG_CV_EPOCH,
    "infeasible": names.TAG_INFEASIBLE,
}
MIRRORED_STATES = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# The worker's user attr holding the validation confusion matrix at the best epoch (COMPLETE trials).
CONFUSION_ATTR = "val_confusion_matrix"


def ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def child_match(study_name: str, trial_number: int) -> dict[str, str]:
    """The tags a trial's run is found by (MLflow run ids are not known to a fresh process)."""
    return {names.TAG_STUDY: study_name, names.TAG_TRIAL_NUMBER: str(trial_number), names.TAG_ROLE: names.ROLE_TRIAL}


def child_tags(study_name: str, trial_number: int, parent_run_id: str) -> dict[str, str]:
    return {**child_match(study_name, trial_number), names.TAG_PARENT_RUN_ID: parent_run_id}


def was_trained(trial: FrozenTrial) -> bool:
    """Whether a trial got as far as training, and so has a run.

    A trial rejected before training (an invalid architecture, one surplus to the budget, or one over a
    constraint, PRUNED as infeasible) has no curve: it is recorded on the Optuna trial with its reason,
    not as an MLflow run.
    """
    if trial.state not in MIRRORED_STATES or is_infeasible(trial):
        return False
    return trial.state != TrialState.FAIL or "n_params" in trial.user_attrs


def metric_points(step: int, metrics: dict[str, Any], timestamp_ms: int) -> list[Point]:
    """A point for every numeric entry; booleans and non-numbers are not metrics."""
    return [
        Point(clean_key(key), int(step), float(value), timestamp_ms)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]


def history_points(history: list[dict], start_ms: int) -> list[Point]:
    """Per-epoch points from the worker's `history` (its `epoch` entry is the step; else 1, 2, …), stamped
    at the trial's start plus the epoch seconds so far."""
    points: list[Point] = []
    elapsed_s, stamp = 0.0, start_ms
    for index, row in enumerate(history, start=1):
        if not isinstance(row, dict):
            continue
        seconds = row.get("epoch_seconds")
        if isinstance(seconds, int | float) and math.isfinite(seconds):
            elapsed_s += seconds
        stamp = max(stamp + 1, start_ms + round(elapsed_s * 1000))
        step = int(row.get("epoch", index))
        points.extend(metric_points(step, {k: v for k, v in row.items() if k != "epoch"}, stamp))
    return points


def curve_points(trial: FrozenTrial, *, objective: str) -> list[Point]:
    """The trial's per-epoch curves: its `history`, else (finished trials of older workers) its reported values."""
    start_ms = ms(trial.datetime_start) or 0
    history = trial.user_attrs.get("history")
    if isinstance(history, list) and history:
        return history_points(history, start_ms)
    if trial.state == TrialState.RUNNING:
        # A running trial reports its value a moment before it writes the epoch's history: projected in
        # between, the point would get a made-up timestamp and, runs being append-only, keep it.
        return []
    points: list[Point] = []
    for step, value in sorted(trial.intermediate_values.items()):
        points.extend(metric_points(step, {f"val_{objective}": value}, start_ms + step))
    return points


def trial_run(trial: FrozenTrial, *, objective: str) -> RunUpdate:
    """Everything the trial's run should hold, from the trial alone: the one builder of a child run."""
    attrs = trial.user_attrs
    state = trial.state.name
    start_ms = ms(trial.datetime_start) or 0
    end_ms = ms(trial.datetime_complete)
    tags = {names.TAG_TRIAL_ID: str(trial._trial_id), names.TAG_STATE: state}
    tags.update({tag: tag_value(attrs[attr]) for attr, tag in ATTR_TAGS.items() if attrs.get(attr) is not None})
    points = curve_points(trial, objective=objective)
    last_step = max((point.step for point in points), default=0)
    once: dict[str, Point] = {}
    if isinstance(attrs.get("n_params"), int | float):
        once[names.METRIC_N_PARAMS] = Point(names.METRIC_N_PARAMS, 0, float(attrs["n_params"]), start_ms)
    for cost, value in (attrs.get("cost") or {}).items():
        key = names.METRIC_COST_PREFIX + cost
        once[key] = Point(key, 0, float(value), start_ms)
    artifacts: dict[str, Any] = {}
    if trial.state == TrialState.COMPLETE:
        value = quality_value(trial)
        if value is not None:
            once[names.METRIC_OBJECTIVE] = Point(names.METRIC_OBJECTIVE, last_step, value, end_ms or 0)
        for fold, value in enumerate(attrs.get(FOLD_VALUES_ATTR) or [], start=1):
            if isinstance(value, int | float) and math.isfinite(value):
                key = f"cv_fold{fold}_value"
                once[key] = Point(key, last_step, float(value), end_ms or 0)
        history = attrs.get("history")
        curves = plots.training_curves(history) if isinstance(history, list) else None
        if curves is not None:
            artifacts[names.ARTIFACT_CURVES] = curves
        if isinstance(attrs.get(CONFUSION_ATTR), list) and attrs[CONFUSION_ATTR]:
            artifacts[names.ARTIFACT_CONFUSION] = plots.confusion_matrix(attrs[CONFUSION_ATTR])
    config = attrs.get("config") if isinstance(attrs.get("config"), dict) else None
    return RunUpdate(
        tags=tags,
        params=trial_params(trial.params, config),
        points=points,
        once=once,
        artifacts=artifacts,
        status=names.RUN_STATUS_FOR_STATE[state],
        end_time_ms=end_ms,
    )


def parent_best(study: optuna.Study, trials: list[FrozenTrial]) -> tuple[dict[str, str], list[Point]]:
    """The parent run's best tags (the study's best COMPLETE trial, `studies.best_trial`) and its
    `best_value` curve: at step = every finished trial's number, the best value among the trials completed
    by then, stamped with that trial's completion."""
    finished = sorted(
        (t for t in trials if t.state in FINISHED_STATES and t.datetime_complete is not None),
        key=lambda t: (t.datetime_complete, t.number),
    )
    points: list[Point] = []
    best_so_far: FrozenTrial | None = None
    for trial in finished:
        best_so_far = best_trial(study, [t for t in (best_so_far, trial) if t is not None])
        if best_so_far is not None:
            points.append(
                Point(names.METRIC_BEST_VALUE, trial.number, quality_value(best_so_far), ms(trial.datetime_complete))
            )
    best = best_trial(study, trials)
    tags = {}
    if best is not None:
        tags = {names.TAG_BEST_VALUE: repr(quality_value(best)), names.TAG_BEST_TRIAL_NUMBER: str(best.number)}
    if len(study.directions) > 1:
        tags[names.TAG_PARETO_FRONT] = front_listing(study, trials)
    return tags, points


def front_listing(study: optuna.Study, trials: list[FrozenTrial]) -> str:
    """The Pareto front as the parent run lists it: `trial 3: val_roc_auc=0.9123 params=13489`, one a line."""
    metric_names = study.metric_names or [f"value{index}" for index in range(len(study.directions))]
    lines = [
        f"trial {trial.number}: "
        + " ".join(f"{name}={value:.6g}" for name, value in zip(metric_names, trial.values, strict=True))
        for trial in pareto_front(study, trials)
    ]
    listing = "\n".join(lines) or "(no completed trial yet)"
    for kept in range(len(lines), 0, -1):
        if len(listing) <= names.TAG_VALUE_LIMIT:
            break
        listing = "\n".join([*lines[: kept - 1], f"… and {len(lines) - kept + 1} more trials"])
    return listing
