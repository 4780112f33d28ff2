"""Idempotent operations on MLflow runs: find-or-create by tags, and apply an update that logs only what
the run does not have yet. Re-applying the same update (the next change of a trial, a second `mlflow-sync`)
changes nothing, so neither runs nor metric points are ever duplicated."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from mlflow.entities import Metric, Param, Run, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from search.tracking import names
from search.tracking.client import tracking_client
from search.tracking.plots import log_figure
from search.tracking.uri import artifact_location
from studies import mask_secrets

# MLflow's limits (mlflow.utils.validation); a value beyond them is refused by the server.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
_TRUNCATED = "…[truncated]"
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /]")


def clean_key(key: str) -> str:
    """A metric/param/tag key MLflow accepts (letters, digits, `_ - . / space`)."""
    return _BAD_KEY_CHARS.sub("_", str(key))[:MAX_KEY]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_TRUNCATED)] + _TRUNCATED


def param_value(value: Any) -> str:
    """Strings as they are; everything else JSON-encoded (lists stay readable: `[32, 64]`)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return _clip(mask_secrets(text), MAX_PARAM_VALUE)


def tag_value(value: Any) -> str:
    return _clip(mask_secrets(str(value)), MAX_TAG_VALUE)


def trial_params(params: dict[str, Any], config: dict[str, Any] | None) -> dict[str, str]:
    """Optuna's sampled params under their own names, the flat config under `config.<key>`."""
    out = {clean_key(k): param_value(v) for k, v in params.items()}
    for key, value in (config or {}).items():
        out[clean_key(names.CONFIG_PARAM_PREFIX + key)] = param_value(value)
    return out


class Point(NamedTuple):
    """One metric value; its timestamp comes from the trial, so a point sent twice is the same row."""

    key: str
    step: int
    value: float
    timestamp_ms: int


@dataclass
class RunState:
    """What a run already holds, as far as deduplication needs to know; kept current by `apply_update`."""

    run_id: str
    status: str
    tags: dict[str, str]
    params: dict[str, str]
    latest_step: dict[str, int]  # metric key -> highest step logged
    artifacts: set[str] | None = None  # None until listed

    @classmethod
    def from_run(cls, run: Run) -> RunState:
        # `_metric_objs` carries each latest metric's step (MLflow keeps the highest step as "latest");
        # reading it saves a get_metric_history request per key.
        latest = {m.key: m.step for m in run.data._metric_objs}
        return cls(run.info.run_id, run.info.status, dict(run.data.tags), dict(run.data.params), latest)


@dataclass
class RunUpdate:
    """The wanted state of part of a run. Points are logged only beyond the run's latest step for their key
    (epochs arrive in order), `once` metrics only when the key is absent, artifacts only when missing."""

    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)
    once: dict[str, Point] = field(default_factory=dict)  # metric key -> its one point
    artifacts: dict[str, Any] = field(default_factory=dict)  # artifact path (.html) -> plotly Figure
    status: str | None = None
    end_time_ms: int | None = None


def apply_update(client: MlflowClient, state: RunState, update: RunUpdate) -> bool:
    """Log what `state` lacks of `update`; returns whether anything was written."""
    tags = {k: v for k, v in update.tags.items() if state.tags.get(k) != v}
    # A param once logged cannot change in MLflow; a differing value (should not happen) is left as it is.
    params = {k: v for k, v in update.params.items() if k not in state.params}
    metrics = []
    new_latest: dict[str, int] = {}
    for point in sorted(update.points, key=lambda p: p.step):
        if point.step > max(state.latest_step.get(point.key, -math.inf), new_latest.get(point.key, -math.inf)):
            metrics.append(Metric(point.key, point.value, point.timestamp_ms, point.step))
            new_latest[point.key] = point.step
    for key, point in update.once.items():
        if key not in state.latest_step and key not in new_latest:
            metrics.append(Metric(key, point.value, point.timestamp_ms, point.step))
            new_latest[key] = point.step
    _log_batches(
        client, state.run_id, metrics, [Param(k, v) for k, v in params.items()], [RunTag(k, v) for k, v in tags.items()]
    )
    state.tags.update(tags)
    state.params.update(params)
    state.latest_step.update(new_latest)
    wrote = bool(tags or params or metrics)

    if update.artifacts:
        if state.artifacts is None:
            state.artifacts = _list_artifacts(client, state.run_id)
        for path, figure in update.artifacts.items():
            if path not in state.artifacts:
                log_figure(client, state.run_id, figure, path)
                state.artifacts.add(path)
                wrote = True

    if update.status and update.status != state.status:
        if update.status == "RUNNING":
            client.update_run(state.run_id, status="RUNNING")
        else:
            client.set_terminated(state.run_id, status=update.status, end_time=update.end_time_ms)
        state.status = update.status
        wrote = True
    return wrote


def _log_batches(client: MlflowClient, run_id: str, metrics: list, params: list, tags: list) -> None:
    """As few `log_batch` requests as MLflow's per-batch limits allow (usually one)."""
    keyed = [("params", p) for p in params] + [("tags", t) for t in tags]
    while keyed or metrics:
        head, keyed = keyed[:MAX_PARAMS_TAGS_PER_BATCH], keyed[MAX_PARAMS_TAGS_PER_BATCH:]
        room = MAX_METRICS_PER_BATCH - len(head)
        batch_metrics, metrics = metrics[:room], metrics[room:]
        client.log_batch(
            run_id,
            metrics=batch_metrics,
            params=[e for kind, e in head if kind == "params"],
            tags=[e for kind, e in head if kind == "tags"],
        )


def _list_artifacts(client: MlflowClient, run_id: str) -> set[str]:
    found: set[str] = set()
    pending = [None]
    while pending:
        folder = pending.pop()
        for info in client.list_artifacts(run_id, folder):
            (pending.append(info.path) if info.is_dir else found.add(info.path))
    return found


def _quote(value: str) -> str:
    return f"'{value}'" if "'" not in value else f'"{value}"'


def find_runs(client: MlflowClient, experiment_id: str, match: dict[str, str]) -> list[Run]:
    """Active runs of the experiment whose tags equal `match`, oldest first (ties: by run id)."""
    filter_string = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in match.items())
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def find_or_create_run(
    client: MlflowClient,
    *,
    experiment_id: str,
    match: dict[str, str],
    tags: dict[str, str],
    run_name: str,
    start_time_ms: int | None = None,
) -> tuple[Run, bool]:
    """The run tagged `match`, created (with `tags`) when there is none; returns (run, created).

    Two processes may both create it at once: each then searches again, keeps the oldest and deletes
    its own extra, so exactly one survives whichever way the race goes.
    """
    runs = find_runs(client, experiment_id, match)
    if runs:
        return runs[0], False
    created = client.create_run(experiment_id, start_time=start_time_ms, tags={**tags, **match}, run_name=run_name)
    runs = find_runs(client, experiment_id, match) or [created]
    keep = runs[0]
    if keep.info.run_id != created.info.run_id:
        client.delete_run(created.info.run_id)
        return keep, False
    return created, True


def get_or_create_experiment(
    client: MlflowClient, *, tracking_uri: str, study_name: str, label: str | None = None
) -> str:
    """The experiment `ecgsearch/<label>` (label defaults to the study name), created if missing."""
    label = label or study_name
    name = names.experiment_name(label)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name,
                artifact_location=artifact_location(tracking_uri, label),
                tags={names.TAG_STUDY: study_name, names.TAG_EXPERIMENT_KIND: names.EXPERIMENT_KIND_TRAINING},
            )
        except MlflowException:
            # Another process created it between our lookup and our create.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if experiment.tags.get(names.TAG_EXPERIMENT_KIND) is None:  # made by an ecgsearch that did not set it
        client.set_experiment_tag(experiment.experiment_id, names.TAG_EXPERIMENT_KIND, names.EXPERIMENT_KIND_TRAINING)
    return experiment.experiment_id


def setup_study_mirror(
    *, tracking_uri: str, study_name: str, tags: dict[str, str], new_study: bool = False
) -> tuple[str, str]:
    """Get-or-create the study's experiment (`ecgsearch/<study>`) and its one parent run.

    The parent run is found again by its tags (`optuna.study`, `ecgsearch.role=study`), never created
    twice; `tags` (space, masked storage, sampler, pruner, objective, …) are set on it.
    `new_study`: the study was just created, so a parent run already in `ecgsearch/<study>` belongs to
    another study of the same name (another database, or one deleted since); this study then gets
    its own experiment, `ecgsearch/<study>@<UTC time>`, rather than mixing its trials into that one's.
    Returns (experiment_id, parent_run_id).
    """
    client = tracking_client(tracking_uri)
    experiment_id = get_or_create_experiment(client, tracking_uri=tracking_uri, study_name=study_name)
    parent_match = {names.TAG_STUDY: study_name, names.TAG_ROLE: names.ROLE_STUDY}
    if new_study and find_runs(client, experiment_id, parent_match):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        experiment_id = get_or_create_experiment(
            client, tracking_uri=tracking_uri, study_name=study_name, label=f"{study_name}@{stamp}"
        )
    run, _ = find_or_create_run(
        client,
        experiment_id=experiment_id,
        match=parent_match,
        tags={},
        run_name=study_name,
    )
    state = RunState.from_run(run)
    apply_update(client, state, RunUpdate(tags={clean_key(k): tag_value(v) for k, v in tags.items()}))
    return experiment_id, run.info.run_id
