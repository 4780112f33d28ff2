"""Writing a study's projection (see `projection`) into its MLflow experiment: per trial for the live mirror,
for every trial at once for `mlflow-sync`, which rebuilds or completes the MLflow side from the database
alone; running it twice changes nothing."""

from __future__ import annotations

from typing import Any

import optuna
from mlflow.entities import Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial

from search.tracking import names
from search.tracking.client import store_error, tracking_client
from search.tracking.projection import child_match, child_tags, ms, parent_best, trial_run, was_trained
from search.tracking.runs import (
    RunState,
    RunUpdate,
    apply_update,
    clean_key,
    find_or_create_run,
    find_runs,
    setup_study_mirror,
    tag_value,
)
from search.tracking.uri import http_reachable, is_http
from studies import best_trial

# The parent's best tags are re-derived after writing while the database's best keeps moving under them.
MAX_BEST_TAG_PASSES = 3
# MLflow retries a request to a server that is not there for minutes; a TCP connect says so at once.
PROBE_TIMEOUT_S = 3.0


class Projector:
    """The MLflow side of one study: each trial's child run and the parent run, written from the database."""

    def __init__(
        self, client: MlflowClient, *, study_name: str, experiment_id: str, parent_run_id: str, objective: str
    ) -> None:
        self.client = client
        self.study_name = study_name
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.objective = objective
        # What each run held after our last write: saves a read per update. Dropped after any error (a
        # partly applied update) and once a finished trial's run is complete.
        self._runs: dict[int, RunState] = {}

    def sync_trial(self, trial: FrozenTrial, run: Run | None = None) -> tuple[str, bool, bool]:
        """Find or create the trial's run (`run` when the caller found it already) and log what it lacks.

        Returns (run_id, created, changed)."""
        update = trial_run(trial, objective=self.objective)
        state = self._runs.pop(trial.number, None)
        created = False
        if state is None:
            if run is None:
                run, created = find_or_create_run(
                    self.client,
                    experiment_id=self.experiment_id,
                    match=child_match(self.study_name, trial.number),
                    tags={**update.tags, **child_tags(self.study_name, trial.number, self.parent_run_id)},
                    run_name=names.run_name(trial.number),
                    start_time_ms=ms(trial.datetime_start),
                )
            state = RunState.from_run(run)
        changed = apply_update(self.client, state, update)
        if not trial.state.is_finished():
            self._runs[trial.number] = state
        return state.run_id, created, changed or created

    def sync_parent(self, study: optuna.Study) -> bool:
        """The parent's `best_value` curve and best tags, derived from the database every time: writers that
        race each other each write what the database says, and the last one re-checks it, so the tags end at
        the study's best whichever write lands last."""
        client, run_id = self.client, self.parent_run_id
        trials = study.get_trials(deepcopy=False)
        tags, points = parent_best(study, trials)
        logged = {point.step for point in client.get_metric_history(run_id, names.METRIC_BEST_VALUE)}
        missing = [point for point in points if point.step not in logged]
        # Only missing steps are passed (trials finish out of order), so an empty state logs exactly those.
        empty = RunState(run_id, status="", tags={}, params={}, latest_step={})
        wrote = apply_update(client, empty, RunUpdate(points=missing))
        for _ in range(MAX_BEST_TAG_PASSES):
            if not tags:
                break
            current = client.get_run(run_id).data.tags
            stale = [RunTag(k, v) for k, v in tags.items() if current.get(k) != v]
            if not stale:
                break
            client.log_batch(run_id, tags=stale)
            wrote = True
            best = best_trial(study)
            if best is not None and tags[names.TAG_BEST_TRIAL_NUMBER] == str(best.number):
                break
            tags, _ = parent_best(study, study.get_trials(deepcopy=False))
        return wrote


def _existing_parent(client: MlflowClient, experiment_id: str | None, parent_run_id: str | None) -> bool:
    if not experiment_id or not parent_run_id:
        return False
    try:
        return client.get_run(parent_run_id).info.experiment_id == experiment_id
    except MlflowException as error:
        if error.get_http_status_code() >= 500:
            raise
        return False  # ids of another tracking store, or a deleted run


def sync_study(
    study: optuna.Study,
    *,
    tracking_uri: str,
    experiment_id: str | None,
    parent_run_id: str | None,
    study_tags: dict[str, str],
) -> dict[str, Any]:
    """Find-or-create the experiment, the parent run and every trained trial's child run, and log what is
    missing. `study_tags` are the parent run's tags (`names.TAG_OBJECTIVE` also names the per-epoch metric
    `val_<objective>` of trials without a `history`).

    Returns a summary: experiment_id, parent_run_id, created / updated / unchanged run counts, duplicates
    removed. A store that is down or refuses raises `TrackingStoreError` (masked message)."""
    if is_http(tracking_uri) and not http_reachable(tracking_uri, PROBE_TIMEOUT_S):
        raise store_error(ConnectionError("nothing answers"), tracking_uri, f"mirroring study {study.study_name!r}")
    try:
        return _sync_study(
            study, tracking_uri=tracking_uri, experiment_id=experiment_id, parent_run_id=parent_run_id, tags=study_tags
        )
    except (MlflowException, OSError) as error:
        raise store_error(error, tracking_uri, f"mirroring study {study.study_name!r}") from None


def _sync_study(
    study: optuna.Study, *, tracking_uri: str, experiment_id: str | None, parent_run_id: str | None, tags: dict
) -> dict[str, Any]:
    client = tracking_client(tracking_uri)
    if not _existing_parent(client, experiment_id, parent_run_id):
        experiment_id, parent_run_id = setup_study_mirror(
            tracking_uri=tracking_uri, study_name=study.study_name, tags=tags
        )
    else:
        apply_update(
            client,
            RunState.from_run(client.get_run(parent_run_id)),
            RunUpdate(tags={clean_key(k): tag_value(v) for k, v in tags.items()}),
        )
    assert experiment_id is not None and parent_run_id is not None
    projector = Projector(
        client,
        study_name=study.study_name,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        objective=tags.get(names.TAG_OBJECTIVE) or "objective",
    )
    existing: dict[str, list[Run]] = {}
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
    for trial in sorted(filter(was_trained, study.get_trials(deepcopy=False)), key=lambda t: t.number):
        known = existing.get(str(trial.number))
        _, created, changed = projector.sync_trial(trial, known[0] if known else None)
        summary["created" if created else "updated" if changed else "unchanged"] += 1
    projector.sync_parent(study)
    return summary
