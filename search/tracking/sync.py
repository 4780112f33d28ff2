"""`mlflow-sync`: rebuild or complete a study's MLflow mirror from the Optuna database alone.

Everything a trial's run holds is derivable from the trial (params, user attrs `config`, `history`,
`n_params`, …), so a lost spool or a fresh tracking store is repaired by running this; running it twice
changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from search.tracking import names, plots
from search.tracking.mirror import child_match, child_tags
from search.tracking.runs import (
    RunState,
    RunUpdate,
    apply_update,
    clean_key,
    find_or_create_run,
    find_runs,
    history_points,
    is_better,
    metric_points,
    setup_study_mirror,
    tag_value,
    trial_params,
    update_parent_best,
)

# Trial user attrs (written by the worker) -> child-run tags.
_ATTR_TAGS = {
    "worker_host": names.TAG_WORKER_HOST,
    "worker_pid": names.TAG_WORKER_PID,
    "device": names.TAG_DEVICE,
    "family": names.TAG_FAMILY,
    "retried_from": names.TAG_RETRIED_FROM,
    "pruned_at_epoch": names.TAG_PRUNED_AT_EPOCH,
    "fail_reason": names.TAG_FAIL_REASON,
}
_MIRRORED_STATES = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def trial_update(trial: FrozenTrial, *, objective: str) -> RunUpdate:
    """Everything the trial's run should hold, from the trial alone."""
    attrs = trial.user_attrs
    state = trial.state.name
    tags = {names.TAG_TRIAL_ID: str(trial._trial_id), names.TAG_STATE: state}
    for attr, tag in _ATTR_TAGS.items():
        if attrs.get(attr) is not None:
            tags[tag] = tag_value(attrs[attr])
    history = attrs.get("history")
    if isinstance(history, list) and history:
        points = history_points(history)
    else:
        points = []
        for step, value in sorted(trial.intermediate_values.items()):
            points.extend(metric_points(step, {f"val_{objective}": value}))
    last_step = max((step for _, step, _ in points), default=0)
    once: dict[str, tuple[float, int]] = {}
    if isinstance(attrs.get("n_params"), int | float):
        once[names.METRIC_N_PARAMS] = (float(attrs["n_params"]), 0)
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        once[names.METRIC_OBJECTIVE] = (float(trial.value), last_step)
    artifacts = {}
    if trial.state == TrialState.COMPLETE and isinstance(history, list):
        curves = plots.training_curves(history)
        if curves is not None:
            artifacts[names.ARTIFACT_CURVES] = curves
    config = attrs.get("config") if isinstance(attrs.get("config"), dict) else None
    return RunUpdate(
        tags=tags,
        params=trial_params(trial.params, config),
        points=points,
        once=once,
        artifacts=artifacts,
        status=names.RUN_STATUS_FOR_STATE[state],
        end_time_ms=_ms(trial.datetime_complete),
    )


def _existing_parent(client: MlflowClient, experiment_id: str | None, parent_run_id: str | None) -> bool:
    if not experiment_id or not parent_run_id:
        return False
    try:
        return client.get_run(parent_run_id).info.experiment_id == experiment_id
    except MlflowException:  # ids of another tracking store, or a deleted run
        return False


def was_trained(trial: FrozenTrial) -> bool:
    """Whether a trial got as far as training, as the live mirror sees it.

    A trial rejected before training (an invalid architecture, or one surplus to the budget) has no
    model and no curve: it is recorded on the Optuna trial with its reason, not as an MLflow run.
    """
    return trial.state != TrialState.FAIL or "n_params" in trial.user_attrs


def sync_study(
    study: optuna.Study,
    *,
    tracking_uri: str,
    experiment_id: str | None,
    parent_run_id: str | None,
    study_tags: dict[str, str],
) -> dict[str, Any]:
    """Find-or-create the experiment, the parent run and every trial's child run, and log what is missing.

    `study_tags` are the parent run's tags (`names.TAG_OBJECTIVE` also names the per-epoch metric
    `val_<objective>` for trials without a `history`). Returns a summary: experiment_id, parent_run_id,
    created / updated / unchanged run counts, duplicates removed.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    if not _existing_parent(client, experiment_id, parent_run_id):
        experiment_id, parent_run_id = setup_study_mirror(
            tracking_uri=tracking_uri, study_name=study.study_name, tags=study_tags
        )
    else:
        apply_update(
            client,
            RunState.from_run(client.get_run(parent_run_id)),
            RunUpdate(tags={clean_key(k): tag_value(v) for k, v in study_tags.items()}),
        )
    assert experiment_id is not None and parent_run_id is not None
    objective = study_tags.get(names.TAG_OBJECTIVE) or "objective"

    existing: dict[str, list] = {}
    for run in find_runs(client, experiment_id, {names.TAG_STUDY: study.study_name, names.TAG_ROLE: names.ROLE_TRIAL}):
        existing.setdefault(run.data.tags.get(names.TAG_TRIAL_NUMBER, ""), []).append(run)
    duplicates_removed = 0
    for runs in existing.values():
        for extra in runs[1:]:  # oldest first: the first is the one every writer finds
            client.delete_run(extra.info.run_id)
            duplicates_removed += 1

    summary = {
        "experiment_id": experiment_id,
        "parent_run_id": parent_run_id,
        "created": 0,
        "updated": 0,
        "unchanged": 0,
        "duplicates_removed": duplicates_removed,
    }
    trials = sorted(study.get_trials(deepcopy=False, states=_MIRRORED_STATES), key=lambda t: t.number)
    for trial in filter(was_trained, trials):
        runs = existing.get(str(trial.number))
        if runs:
            run, created = runs[0], False
        else:
            run, created = find_or_create_run(
                client,
                experiment_id=experiment_id,
                match=child_match(study.study_name, trial.number),
                tags=child_tags(study.study_name, trial.number, parent_run_id),
                run_name=names.run_name(trial.number),
                start_time_ms=_ms(trial.datetime_start),
            )
        changed = apply_update(client, RunState.from_run(run), trial_update(trial, objective=objective))
        summary["created" if created else "updated" if changed else "unchanged"] += 1

    _sync_parent_best(client, study, parent_run_id, direction=study_tags.get(names.TAG_DIRECTION))
    return summary


def _sync_parent_best(client: MlflowClient, study: optuna.Study, parent_run_id: str, direction: str | None) -> None:
    """`best_value` at every finished trial's number (best among trials completed by then)."""
    direction = direction or study.direction.name.lower()
    finished = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        if t.datetime_complete is not None
    ]
    finished.sort(key=lambda t: (t.datetime_complete, t.number))
    logged = {point.step for point in client.get_metric_history(parent_run_id, names.METRIC_BEST_VALUE)}
    best: FrozenTrial | None = None
    for trial in finished:
        if (
            trial.state == TrialState.COMPLETE
            and trial.value is not None
            and (best is None or is_better(trial.value, best.value, direction))
        ):
            best = trial
        if best is not None and trial.number not in logged:
            update_parent_best(
                client, parent_run_id, trial_number=trial.number, best_value=best.value, best_trial_number=best.number
            )
    if best is not None:
        # The tags follow the study's best even when every step was logged before.
        update_parent_best(
            client,
            parent_run_id,
            trial_number=finished[-1].number,
            best_value=best.value,
            best_trial_number=best.number,
        )
