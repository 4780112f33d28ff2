"""studies/ on a real PostgreSQL server: a fresh database per test (the `postgres_url` fixture)."""

from __future__ import annotations

import dataclasses
import time

import optuna
import pytest

from studies import (
    StorageError,
    StudyDefinition,
    StudyMismatch,
    create_or_load_study,
    load_study_with_definition,
    open_storage,
    summarise,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def definition(make_definition) -> StudyDefinition:
    return make_definition(space="cnn_lstm", data_fingerprint="ef" * 32, pruner="median", seed=1)


def test_open_storage_uses_pool_settings_and_bare_scheme(postgres_url: str) -> None:
    bare = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    storage = open_storage(bare)
    assert storage.engine.url.drivername == "postgresql+psycopg"
    assert storage.engine_kwargs["pool_pre_ping"] is True
    assert storage.engine_kwargs["connect_args"]["connect_timeout"] > 0
    assert storage.engine.pool.size() == storage.engine_kwargs["pool_size"]


def test_missing_database_suggests_createdb(postgres_url: str) -> None:
    missing = postgres_url.rsplit("/", 1)[0] + "/ecgsearch_no_such_db"
    with pytest.raises(StorageError, match="createdb") as raised:
        open_storage(missing)
    assert "ecgsearch_no_such_db" in str(raised.value)


def test_create_load_and_mismatch(postgres_url: str, definition: StudyDefinition) -> None:
    study, stored, created = create_or_load_study(open_storage(postgres_url), "pg-study", definition)
    assert created and stored == definition

    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0.0, 1.0)

    study.optimize(objective, n_trials=3)
    # A second process would open its own storage.
    loaded, stored = load_study_with_definition(open_storage(postgres_url), "pg-study")
    assert stored == definition and len(loaded.trials) == 3
    assert isinstance(loaded.pruner, optuna.pruners.MedianPruner)
    with pytest.raises(StudyMismatch, match="space: stored 'cnn_lstm' vs given 'lstm'"):
        create_or_load_study(open_storage(postgres_url), "pg-study", dataclasses.replace(definition, space="lstm"))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask() stands in for a worker
def test_heartbeat_fails_and_retries_a_dead_workers_trial(postgres_url: str, definition: StudyDefinition) -> None:
    storage = open_storage(postgres_url, heartbeat_interval=1, grace_period=2)
    study, stored, _ = create_or_load_study(storage, "hb", definition)
    dead = study.ask()
    dead.suggest_float("x", 0.0, 1.0)
    dead.report(0.25, step=1)
    storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)
    [running] = summarise(study, stored).running
    assert running.number == dead.number and running.storage_heartbeat_age_s >= 2

    # A new worker asking for a trial fails the stale one and runs its copy first.
    worker_study, _ = load_study_with_definition(open_storage(postgres_url, heartbeat_interval=1, grace_period=2), "hb")
    retried: list[tuple[float, dict]] = []

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        retried.append((x, dict(trial.study.trials[trial.number].intermediate_values)))
        return x

    worker_study.optimize(objective, n_trials=1)
    assert retried == [(dead.params["x"], {})]  # same params, a clean curve: trials keep no checkpoints
    states = [trial.state for trial in worker_study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
