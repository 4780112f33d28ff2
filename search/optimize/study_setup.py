"""`start`'s part before any trial: load and fingerprint the data, create or resume the study, set up its
MLflow experiment. And `worker`'s: open an existing study and choose where its trials are mirrored."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

import spaces
from search.data import ASSUMED_WINDOW_S, ECGDataset, dataset_folds, load_dataset
from search.errors import UsageError
from search.optimize.settings import StudySettings
from search.optimize.space_context import space_context
from search.optimize.worker import LoadedStudy, current_versions, refuse_incompatible
from search.training.metrics import OBJECTIVES
from studies import (
    USER_ATTR_KEY,
    StudyDefinition,
    StudyMismatch,
    create_or_load_study,
    load_study_with_definition,
    mask_secrets,
    open_existing_storage,
    open_storage,
    read_folds,
    sqlite_artifact_dir,
    write_definition,
    write_folds,
)

# Settings a resumed study keeps from its creation even when `start` is given others.
KEPT_ON_RESUME = ("epochs", "sampler", "pruner", "max_params", "max_flops", "max_latency_ms", "min_epochs", "seed")


@dataclass(frozen=True)
class IgnoredSetting:
    name: str  # the StudySettings field
    given: Any
    kept: Any


@dataclass
class PreparedStudy:
    """A created or resumed study, ready for this process's workers (the data is loaded and checked)."""

    loaded: LoadedStudy
    created: bool
    tracking_uri: str | None = field(repr=False)  # None: mirroring is off
    mirror_reachable: bool  # False: the MLflow server did not answer, trials run without a live mirror
    ignored: list[IgnoredSetting]
    # The (masked) store a resumed study was mirrored to before this run chose another one.
    mirror_moved_from: str | None = None
    # What the user should know: trials enqueued for them (warm start, starting points) ...
    notes: list[str] = field(default_factory=list)
    # ... and what may make the estimate wrong (an assumed sampling rate, folds without patient ids).
    warnings: list[str] = field(default_factory=list)

    @property
    def study(self) -> optuna.Study:
        return self.loaded.study

    @property
    def definition(self) -> StudyDefinition:
        return self.loaded.definition


def set_up_study(settings: StudySettings) -> PreparedStudy:
    """Create study `settings.study_name`, or resume it keeping its stored settings; nothing runs yet."""
    from search.tracking import resolve_tracking_uri, same_store

    dataset = load_dataset(settings.data_path)
    fingerprint = dataset.fingerprint()
    storage = open_storage(
        settings.storage_url, heartbeat_interval=settings.heartbeat_interval_s, grace_period=settings.grace_period_s
    )
    stored = _stored_definition(storage, settings.study_name)
    given = _definition(settings, dataset, fingerprint, stored=stored)
    # Checked before the study is written: a missing earlier study is the user's to fix, not a half-made study.
    warm_source = _warm_start_source(settings) if settings.warm_start and not stored else None
    study, definition, created = create_or_load_study(storage, settings.study_name, given)
    refuse_incompatible(definition, fingerprint=fingerprint, data_path=settings.data_path)
    warnings = _data_warnings(definition, dataset, assumed_fs=created and dataset.fs is None and settings.fs is None)
    notes = _warm_start(study, definition, settings, warm_source)
    if created and settings.starting_points and settings.warm_start is None:
        notes += _starting_points(study, definition)
    if definition.cv_folds:
        warnings += _cross_validation_folds(study, definition, dataset, created=created)
    tracking_uri = resolve_tracking_uri(settings.mlflow_uri, settings.storage_url, definition.mlflow_tracking_uri)
    reachable, moved_from = True, None
    # A resumed study keeps its experiment, unless it is now mirrored to another store: set one up there.
    if tracking_uri and not (
        definition.mlflow_parent_run_id and same_store(tracking_uri, definition.mlflow_tracking_uri)
    ):
        if definition.mlflow_tracking_uri and not same_store(tracking_uri, definition.mlflow_tracking_uri):
            moved_from = definition.mlflow_tracking_uri
        reachable = _set_up_mirror(definition, tracking_uri, settings, created=created)
    ignored = [] if created else _ignored_settings(settings, definition)
    if created or "trials" in settings.given:
        definition.trials_budget = settings.trials
    write_definition(study, definition)
    return PreparedStudy(
        loaded=LoadedStudy(study, definition, dataset),
        created=created,
        tracking_uri=tracking_uri,
        mirror_reachable=reachable,
        ignored=ignored,
        mirror_moved_from=moved_from,
        notes=notes,
        warnings=warnings,
    )


def _stored_definition(storage: optuna.storages.BaseStorage, study_name: str) -> dict[str, Any]:
    """The stored definition of an existing study as its raw dict ({} for a new study)."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return {}
    stored = storage.get_study_user_attrs(study_id).get(USER_ATTR_KEY)
    return stored if isinstance(stored, dict) else {}


def _given_or_stored(settings: StudySettings, stored: dict[str, Any], name: str, default: Any) -> Any:
    """What the user gave, else a resumed study's own value (so resuming without the flag is no mismatch),
    else `default` for a study that predates the setting (`stored` lacks it)."""
    if name in settings.given or not stored:
        return getattr(settings, name)
    return stored.get(name, default)


def _definition(
    settings: StudySettings, dataset: ECGDataset, fingerprint: str, *, stored: dict[str, Any]
) -> StudyDefinition:
    versions = current_versions()
    objective = _given_or_stored(settings, stored, "objective", settings.objective)
    objective = objective if objective in OBJECTIVES else settings.objective
    objectives = _given_or_stored(settings, stored, "objectives", None)
    objectives = list(objectives) if objectives else None
    if objectives:  # the quality metric is the one objective among them that is not a cost
        objective = next(name for name in objectives if name in OBJECTIVES)
    # A study keeps the sampling rate it was created with: its space's choices depend on it.
    fs = stored.get("fs") if stored else settings.fs or dataset.fs or dataset.seq_len / ASSUMED_WINDOW_S
    return StudyDefinition(
        space=settings.space,
        data_path=str(Path(settings.data_path).resolve()),
        data_fingerprint=fingerprint,
        n_channels=dataset.n_channels,
        seq_len=dataset.seq_len,
        objective=objective,
        direction=OBJECTIVES[objective],
        epochs=settings.epochs,
        sampler=settings.sampler,
        # Optuna prunes no multi-objective trial; ecgsearch trains each to the end (see docs/INTERNALS.md).
        pruner="none" if objectives and len(objectives) > 1 else settings.pruner,
        seed=settings.seed,
        max_params=settings.max_params,
        max_flops=settings.max_flops,
        max_latency_ms=settings.max_latency_ms,
        objectives=objectives,
        artifact_dir=stored.get("artifact_dir") if stored else default_artifact_dir(settings),
        trials_budget=settings.trials,
        ecgsearch_version=versions["ecgsearch"],
        optuna_version=versions["optuna"],
        torch_version=torch.__version__,
        min_epochs=settings.min_epochs,
        cv_folds=_given_or_stored(settings, stored, "cv_folds", 0),
        selection=_given_or_stored(settings, stored, "selection", "best"),
        selection_window=_given_or_stored(settings, stored, "selection_window", 3),
        fs=fs,
        patient_ids=dataset.has_groups,
    )


def _warm_start_source(settings: StudySettings) -> optuna.Study:
    from search.optimize.warm_start import best_source_trials, load_source_study

    assert settings.warm_start is not None
    source = load_source_study(settings.warm_start.storage_url, settings.warm_start.study_name)
    if not best_source_trials(source, 1):
        raise UsageError(f"--warm-start-from {source.study_name!r}: that study has no COMPLETE trial to start from")
    return source


def _warm_start(
    study: optuna.Study, definition: StudyDefinition, settings: StudySettings, source: optuna.Study | None
) -> list[str]:
    """Enqueue an earlier study's best configurations into a new study; say which were taken and how."""
    from search.optimize.warm_start import enqueue_warm_start

    wanted = settings.warm_start
    if wanted is None:
        return []
    if source is None:
        return [f"--warm-start-from {wanted.study_name}: ignored, the study exists (warm starts seed a new study)"]
    ctx = space_context(definition)
    taken = enqueue_warm_start(study, source=source, top=wanted.top, space=spaces.get(definition.space), ctx=ctx)
    definition.warm_start = {
        "study": wanted.study_name,
        "storage": mask_secrets(wanted.storage_url),
        "top": wanted.top,
        "taken": [config.to_dict() for config in taken],
    }
    return [
        f"warm start: trial {config.source_number} of {wanted.study_name} (value {config.source_value:.4f}) "
        f"enqueued"
        + (f"; adapted {', '.join(config.adapted)}" if config.adapted else "")
        + (f"; dropped {', '.join(config.dropped)}" if config.dropped else "")
        for config in taken
    ]


def _starting_points(study: optuna.Study, definition: StudyDefinition) -> list[str]:
    """Enqueue the space's starting points into a new study; say which."""
    from search.optimize.warm_start import enqueue_starting_points

    ctx = space_context(definition)
    names = enqueue_starting_points(study, space=spaces.get(definition.space), ctx=ctx)
    if not names:
        return []
    return [f"starting points enqueued as the first trials: {'; '.join(names)} (--no-starting-points: none)"]


def default_artifact_dir(settings: StudySettings) -> str | None:
    """Where the trials' Optuna artifacts go: as given, else `optuna-artifacts` beside a SQLite study database;
    for a server database none unless given (it must be a folder every worker and the dashboard share)."""
    if settings.artifact_dir:
        return str(Path(settings.artifact_dir).resolve())
    return sqlite_artifact_dir(settings.storage_url)


def _data_warnings(definition: StudyDefinition, dataset: ECGDataset, *, assumed_fs: bool) -> list[str]:
    if not assumed_fs:
        return []
    return [
        f"{dataset.source} does not say its sampling rate (meta.json has no 'fs'): models that need it "
        f"(baseline removal, beat timing) assume {ASSUMED_WINDOW_S:g}-second windows, i.e. {definition.fs:g} Hz; "
        "pass --fs to say otherwise"
    ]


def _cross_validation_folds(
    study: optuna.Study, definition: StudyDefinition, dataset: ECGDataset, *, created: bool
) -> list[str]:
    """Make and store the folds of a new cross-validated study (every worker reads the same ones), or
    check a resumed study's folds still fit the data."""
    n_windows = len(dataset.y_train) + len(dataset.y_val)
    if created:
        write_folds(study, dataset_folds(dataset, definition.cv_folds, definition.seed or 0).tolist())
    elif len(read_folds(study)) != n_windows:
        raise StudyMismatch(
            f"study {study.study_name!r} stores folds for {len(read_folds(study))} train+val windows, the data "
            f"has {n_windows}"
        )
    if dataset.has_groups:
        return []
    return [
        f"{dataset.source} has no patient group ids (groups_*.pt): --cv {definition.cv_folds} treats every "
        "window as its own patient, so windows of one patient fall into several folds and the estimate is "
        "optimistic for unseen patients"
    ]


def _ignored_settings(settings: StudySettings, stored: StudyDefinition) -> list[IgnoredSetting]:
    """Settings the user gave that differ from the resumed study's; a default never counts as given."""
    return [
        IgnoredSetting(name, getattr(settings, name), getattr(stored, name))
        for name in KEPT_ON_RESUME
        if name in settings.given and getattr(settings, name) != getattr(stored, name)
    ]


def _set_up_mirror(definition: StudyDefinition, tracking_uri: str, settings: StudySettings, *, created: bool) -> bool:
    """Create the study's MLflow experiment and parent run once; False when the server does not answer.

    Workers then mirror nothing live, and `ecgsearch mlflow-sync` rebuilds the MLflow side from the study
    database once the store is back (MLflow mirrors, it never decides).
    """
    from search.tracking import definition_tags, setup_study_mirror
    from search.tracking.client import limit_http_retries
    from search.tracking.uri import http_reachable, is_http

    # Stored masked: the study database is readable by every worker and the dashboard.
    definition.mlflow_tracking_uri = mask_secrets(tracking_uri)
    definition.mlflow_experiment_id = definition.mlflow_parent_run_id = None  # ids of this store, or none
    if is_http(tracking_uri):
        limit_http_retries(5.0)
        if not http_reachable(tracking_uri, timeout_s=3.0):
            return False
    experiment_id, parent_run_id = setup_study_mirror(
        tracking_uri=tracking_uri,
        study_name=settings.study_name,
        tags=definition_tags(study_name=settings.study_name, definition=definition, storage_url=settings.storage_url),
        new_study=created,
    )
    definition.mlflow_experiment_id = experiment_id
    definition.mlflow_parent_run_id = parent_run_id
    return True


@dataclass
class JoinedStudy:
    """An existing study opened by `worker`, and the tracking URI its trials are mirrored to (None: off)."""

    loaded: LoadedStudy
    tracking_uri: str | None = field(repr=False)


def join_study(
    storage_url: str, study_name: str, *, mlflow_uri: str | None, heartbeat_interval_s: int, grace_period_s: int
) -> JoinedStudy:
    """Open study `study_name`, which must exist (a missing SQLite file is refused, not created).

    The tracking URI: `mlflow_uri` as given (flag or environment), else the one the study was set up with
    unless it was stored masked (its credentials live in each machine's environment), else the default
    store; "off" disables mirroring. A worker mirrors live only to the study's own store (see
    `worker.build_mirror`).
    """
    from search.tracking import resolve_tracking_uri

    storage = open_existing_storage(storage_url, heartbeat_interval=heartbeat_interval_s, grace_period=grace_period_s)
    study, definition = load_study_with_definition(storage, study_name)
    tracking_uri = resolve_tracking_uri(mlflow_uri, storage_url, definition.mlflow_tracking_uri)
    return JoinedStudy(LoadedStudy(study, definition), tracking_uri)
