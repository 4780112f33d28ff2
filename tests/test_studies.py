"""studies/: storage URLs and errors, definitions in the database, samplers, pruners, summaries."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from studies import (
    PRUNERS,
    SAMPLERS,
    NotAnEcgsearchStudy,
    StorageError,
    StudyDefinition,
    StudyMismatch,
    StudyNotFound,
    UnknownComponent,
    check_compatible,
    count_trials,
    create_or_load_study,
    list_studies,
    load_study_with_definition,
    make_pruner,
    make_sampler,
    mask_secrets,
    open_storage,
    summarise,
    trials_remaining,
    trials_used,
)
from studies.definition import USER_ATTR_KEY
from study_fixtures import make_definition

SECRET = "s3cr3t-pw"


def definition(**changes) -> StudyDefinition:
    return make_definition(**{"epochs": 9, "max_params": 500_000, "trials_budget": 5, **changes})


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


# --- storage URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql+psycopg://ann:s3cr3t@db.example:5432/ecg",
            "postgresql+psycopg://ann:***@db.example:5432/ecg",
        ),
        ("postgresql://ann:p@ss@host/db", "postgresql://ann:***@host/db"),
        ("postgresql://ann:p%40ss@host/db", "postgresql://ann:***@host/db"),
        (
            "postgresql://ann@host/db?password=s3cr3t&sslmode=require",
            "postgresql://ann@host/db?password=***&sslmode=require",
        ),
        ("http://user:pw@mlflow:5000", "http://user:***@mlflow:5000"),
        ("postgresql://ann@host/db", "postgresql://ann@host/db"),
        ("sqlite:///ecgsearch.db", "sqlite:///ecgsearch.db"),
        ("sqlite:////tmp/a:b@c.db", "sqlite:////tmp/a:b@c.db"),
        ("databricks", "databricks"),
        ("not a url at all: x@y", "not a url at all: x@y"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_secrets(url) == masked


@pytest.mark.parametrize(
    ("url", "expected_words"),
    [
        (f"postgresql:/ann:{SECRET}@host/db", ["not a database URL", "postgresql:***@host/db", "sqlite:///"]),
        (f"mysql://ann:{SECRET}@host/db", ["'mysql'", "does not support", "mysql://ann:***@host/db"]),
        (f"postgresql+psycopg2://ann:{SECRET}@host/db", ["postgresql+psycopg2", "psycopg 3"]),
    ],
)
def test_bad_storage_urls_raise_storage_error_without_password(url: str, expected_words: list[str]) -> None:
    with pytest.raises(StorageError) as raised:
        open_storage(url)
    message = str(raised.value)
    for word in expected_words:
        assert word in message
    assert SECRET not in message and "\n" not in message


def test_unreachable_postgres_names_host_and_hides_password() -> None:
    started = time.monotonic()
    with pytest.raises(StorageError) as raised:
        open_storage(f"postgresql://ann:{SECRET}@127.0.0.1:1/ecgsearch")
    message = str(raised.value)
    assert time.monotonic() - started < 15
    assert "postgresql://ann:***@127.0.0.1:1/ecgsearch" in message
    assert "running on 127.0.0.1:1" in message and "createdb" in message
    assert SECRET not in message


def test_missing_sqlite_folder(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist") as raised:
        open_storage(f"sqlite:///{tmp_path / 'nope' / 'studies.db'}")
    assert "mkdir -p" in str(raised.value)


def test_not_a_sqlite_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="SQLite"):
        open_storage(f"sqlite:///{junk}")


def test_heartbeat_settings_are_checked(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="grace_period"):
        open_storage(sqlite_url, heartbeat_interval=10, grace_period=5)


def test_sqlite_storage_settings_and_wal(sqlite_url: str) -> None:
    storage = open_storage(sqlite_url, heartbeat_interval=7, grace_period=20, retries=2)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.get_heartbeat_interval() == 7 and storage.grace_period == 20
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback)
    assert callback._max_retry == 2 and callback._inherit_intermediate_values is False
    assert storage.engine_kwargs["connect_args"]["timeout"] >= 30
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def _claim_queued_trials(sqlite_url: str, start: Any, claimed: Any) -> None:
    """One process's part of the race below: pop queued trials, as `study.optimize` does, until none is left."""
    study = optuna.load_study(study_name="queue", storage=open_storage(sqlite_url))
    start.wait()
    trial_ids = []
    while (trial_id := study._pop_waiting_trial_id()) is not None:
        trial_ids.append(trial_id)
    claimed.put(trial_ids)


def test_processes_racing_for_queued_trials_on_sqlite_each_get_distinct_ones(sqlite_url: str) -> None:
    """Queued trials (starting points, retries) are claimed WAITING -> RUNNING by a read then a write; on SQLite
    two workers could both read WAITING and both run the trial. Four processes draining one queue at once must
    between them claim every trial exactly once."""
    study = optuna.create_study(study_name="queue", storage=open_storage(sqlite_url))
    for index in range(120):
        study.enqueue_trial({"x": index})
    context = multiprocessing.get_context("spawn")
    start, claimed = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_claim_queued_trials, args=(sqlite_url, start, claimed)) for _ in range(4)]
    for process in processes:
        process.start()
    per_process = [claimed.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    all_claims = [trial_id for trial_ids in per_process for trial_id in trial_ids]
    assert sorted(all_claims) == sorted(t._trial_id for t in study.get_trials(deepcopy=False)), (
        f"{len(all_claims) - len(set(all_claims))} trials were claimed twice"
    )
    assert sum(1 for trial_ids in per_process if trial_ids) >= 2, "one process claimed the whole queue: no race ran"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask() stands in for a worker
def test_stale_trial_is_failed_and_retried_with_a_clean_curve(sqlite_url: str) -> None:
    storage = open_storage(sqlite_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="hb", direction="maximize")
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.report(0.6, step=1)
    storage.record_heartbeat(trial._trial_id)
    trial.set_user_attr("worker_host", "gone-host")
    # The worker "dies": no more heartbeats. SQLite's clock has 1 s resolution, so wait > grace + 1.
    time.sleep(3.2)

    running = summarise(study, definition()).running
    assert running[0].storage_heartbeat_age_s is not None and running[0].storage_heartbeat_age_s >= 2

    optuna.storages.fail_stale_trials(study)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]

    seen: list[tuple[dict, dict]] = []

    def objective(retry: optuna.Trial) -> float:
        lr = retry.suggest_float("lr", 1e-4, 1e-2, log=True)
        frozen = retry.study.trials[retry.number]
        seen.append(({"lr": lr}, dict(frozen.intermediate_values)))
        return 0.7

    study.optimize(objective, n_trials=1)
    # Trials keep no checkpoints: the retry trains from epoch 1, so it must not inherit stale reports.
    assert seen == [({"lr": trial.params["lr"]}, {})]
    assert study.trials[1].system_attrs["failed_trial"] == 0
    assert trials_used(study) == 1  # the dead attempt does not count, its completed retry does


# --- definitions -------------------------------------------------------------------------


def test_definition_json_round_trip_and_masked_mlflow_uri() -> None:
    original = definition(mlflow_tracking_uri=f"http://ann:{SECRET}@mlflow:5000", mlflow_experiment_id="3")
    assert SECRET not in original.to_json()
    assert original.mlflow_tracking_uri == "http://ann:***@mlflow:5000"
    assert StudyDefinition.from_json(original.to_json()) == original
    newer = {**original.to_dict(), "field_from_a_newer_version": 1}
    assert StudyDefinition.from_dict(newer) == original
    incomplete = original.to_dict()
    del incomplete["data_fingerprint"]
    with pytest.raises(ValueError, match="data_fingerprint"):
        StudyDefinition.from_dict(incomplete)
    with pytest.raises(ValueError, match="direction"):
        definition(direction="up")


def test_create_then_reload_returns_the_stored_definition(sqlite_url: str) -> None:
    storage = open_storage(sqlite_url)
    given = definition()
    study, in_effect, created = create_or_load_study(storage, "s1", given)
    assert created and in_effect == given
    assert study.user_attrs[USER_ATTR_KEY] == given.to_dict()
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    assert isinstance(study.pruner, optuna.pruners.HyperbandPruner)

    # Resuming with other run settings keeps the stored ones (and rebuilds their sampler/pruner).
    resumed, in_effect, created = create_or_load_study(
        open_storage(sqlite_url), "s1", definition(sampler="random", pruner="median", epochs=3)
    )
    assert not created
    assert in_effect == given
    assert isinstance(resumed.sampler, optuna.samplers.TPESampler)
    assert isinstance(resumed.pruner, optuna.pruners.HyperbandPruner)

    loaded, stored = load_study_with_definition(open_storage(sqlite_url), "s1")
    assert stored == given and loaded.study_name == "s1"


def test_mismatched_definition_is_refused_with_each_difference(sqlite_url: str) -> None:
    storage = open_storage(sqlite_url)
    create_or_load_study(storage, "s1", definition())
    with pytest.raises(StudyMismatch) as raised:
        create_or_load_study(storage, "s1", definition(space="lstm", objective="f1_macro", data_fingerprint="cd" * 32))
    error = raised.value
    assert [d.split(":")[0] for d in error.differences] == ["space", "objective", "data_fingerprint"]
    assert "space: stored 'cnn' vs given 'lstm'" in str(error)
    assert "objective: stored 'roc_auc' vs given 'f1_macro'" in str(error)


def test_unknown_and_foreign_studies(sqlite_url: str) -> None:
    storage = open_storage(sqlite_url)
    create_or_load_study(storage, "mine", definition())
    optuna.create_study(storage=storage, study_name="foreign")
    with pytest.raises(StudyNotFound) as raised:
        load_study_with_definition(storage, "typo")
    assert "'typo'" in str(raised.value) and "foreign, mine" in str(raised.value)
    with pytest.raises(NotAnEcgsearchStudy, match="not created by ecgsearch"):
        load_study_with_definition(storage, "foreign")
    # Not a mismatch: there is nothing to compare with; it exits with the study code all the same.
    assert not isinstance(raised.value, StudyMismatch) and raised.value.exit_code == 5


def test_check_compatible() -> None:
    stored = definition(ecgsearch_version="0.1.0", optuna_version="5.0.0")
    same = {"ecgsearch": "0.1.7", "optuna": "5.0.0", "torch": "2.4.0"}
    assert check_compatible(stored, data_fingerprint=stored.data_fingerprint, versions=same) == []
    differences = check_compatible(
        stored, data_fingerprint="ff" * 32, versions={"ecgsearch": "0.2.0", "optuna": "5.0.1"}
    )
    assert [d.split(":")[0] for d in differences] == [
        "data_fingerprint",
        "ecgsearch_version",
        "optuna_version",
    ]
    assert "data/mitdb" in differences[0]


# --- samplers and pruners ----------------------------------------------------------------


def test_samplers_by_name() -> None:
    assert SAMPLERS == ("tpe", "random", "gp", "nsgaii")
    tpe = make_sampler("tpe", seed=3, n_startup_trials=7)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._multivariate and tpe._group and tpe._constant_liar and tpe._n_startup_trials == 7
    assert isinstance(make_sampler("random", seed=1), optuna.samplers.RandomSampler)
    gp = make_sampler("gp", seed=1, n_startup_trials=4)
    assert isinstance(gp, optuna.samplers.GPSampler) and gp._n_startup_trials == 4
    assert isinstance(make_sampler("nsgaii", seed=1), optuna.samplers.NSGAIISampler)
    with pytest.raises(UnknownComponent, match="expected one of: tpe, random, gp, nsgaii") as raised:
        make_sampler("cmaes")
    assert isinstance(raised.value, ValueError)


def test_tpe_sampler_handles_conditional_families() -> None:
    study = optuna.create_study(sampler=make_sampler("tpe", seed=0, n_startup_trials=3), direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        family = trial.suggest_categorical("family", ["a", "b"])
        width = trial.suggest_int(f"{family}_width", 1, 8)
        return width if family == "b" else -width

    study.optimize(objective, n_trials=12)
    assert len(study.trials) == 12 and study.best_params["family"] == "b"


def test_gp_sampler_models_categorical_and_float_parameters() -> None:
    study = optuna.create_study(sampler=make_sampler("gp", seed=0, n_startup_trials=2), direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        family = trial.suggest_categorical("family", ["a", "b"])
        return trial.suggest_float("train_lr", 1e-4, 3e-3, log=True) * 100 + (family == "b")

    study.optimize(objective, n_trials=4)
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4


def test_pruners_by_name() -> None:
    assert PRUNERS == ("hyperband", "median", "sha", "none")
    hyperband = make_pruner("hyperband", min_epochs=2, max_epochs=27)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert (hyperband._min_resource, hyperband._max_resource, hyperband._reduction_factor) == (2, 27, 3)
    median = make_pruner("median", min_epochs=3, max_epochs=10)
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert (median._n_startup_trials, median._n_warmup_steps) == (4, 3)
    sha = make_pruner("sha", min_epochs=2, max_epochs=10)
    assert isinstance(sha, optuna.pruners.SuccessiveHalvingPruner) and sha._min_resource == 2
    assert isinstance(make_pruner("none", max_epochs=5), optuna.pruners.NopPruner)
    with pytest.raises(UnknownComponent, match="hyperband, median, sha, none"):
        make_pruner("asha", max_epochs=5)
    with pytest.raises(ValueError, match="min_epochs"):
        make_pruner("median", min_epochs=6, max_epochs=5)


# --- summaries ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask() stands in for a worker
def test_summary_of_a_study_in_every_state(sqlite_url: str) -> None:
    storage = open_storage(sqlite_url)
    study, stored, _ = create_or_load_study(storage, "mixed", definition(trials_budget=10))
    for value, family in ((0.8, "cnn"), (0.9, "lstm")):
        trial = study.ask({"family": optuna.distributions.CategoricalDistribution(["cnn", "lstm"])})
        trial.set_user_attr("family", family)
        trial.set_user_attr("config", {"family": family, "lr": 0.001})
        study.tell(trial, value)
    pruned = study.ask()
    pruned.report(0.1, step=1)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    running = study.ask()
    beat = time.time() - 5
    for key, value in (("worker_host", "gpu-box"), ("worker_pid", 4242), ("device", "cuda:1"), ("epoch", 3)):
        running.set_user_attr(key, value)
    running.set_user_attr("heartbeat_at", beat)
    storage.record_heartbeat(running._trial_id)

    summary = summarise(study, stored)
    assert summary.counts == {"RUNNING": 1, "COMPLETE": 2, "PRUNED": 1, "FAIL": 1, "WAITING": 0}
    assert count_trials(study) == summary.counts and summary.n_trials == 5
    assert summary.trials_remaining == 10 - 3 == trials_remaining(study, stored.trials_budget)  # COMPLETE + PRUNED
    assert summary.best is not None
    assert (summary.best.number, summary.best.value, summary.best.family) == (1, 0.9, "lstm")
    assert summary.best.config == {"family": "lstm", "lr": 0.001}
    [alive] = summary.running
    assert (alive.number, alive.worker_host, alive.worker_pid, alive.device, alive.epoch) == (
        4,
        "gpu-box",
        4242,
        "cuda:1",
        3,
    )
    assert 4 <= alive.heartbeat_age_s < 60
    assert alive.storage_heartbeat_age_s is not None and alive.storage_heartbeat_age_s < 60

    listings = {listing.name: listing for listing in list_studies(storage)}
    assert listings["mixed"].space == "cnn" and listings["mixed"].n_trials == 5
    assert listings["mixed"].best_value == 0.9


def test_summary_without_completed_trials(sqlite_url: str) -> None:
    study, stored, _ = create_or_load_study(open_storage(sqlite_url), "empty", definition(trials_budget=None))
    summary = summarise(study, stored)
    assert summary.best is None and summary.running == [] and summary.trials_remaining is None


def test_tpe_reads_the_trials_once_per_trial_and_samples_what_plain_tpe_samples(tmp_path) -> None:
    """With Hyperband, plain TPE re-reads every trial for every independently sampled parameter."""
    from studies.samplers import OncePerTrialTPESampler

    def objective(trial: optuna.Trial) -> float:
        layers = trial.suggest_int("layers", 1, 3)
        widths = [trial.suggest_int(f"width_{i}", 8, 64, log=True) for i in range(layers)]
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        for epoch in range(1, 4):
            trial.report(sum(widths) * lr / epoch, epoch)
        return sum(widths) * lr

    def run(sampler: optuna.samplers.BaseSampler, name: str) -> tuple[list[dict], int]:
        storage = open_storage(f"sqlite:///{tmp_path / name}.db")
        study = optuna.create_study(storage=storage, sampler=sampler, pruner=make_pruner("hyperband", max_epochs=3))
        reads = 0
        read = study._storage.get_all_trials

        def counted(*args, **kwargs):
            nonlocal reads
            reads += 1
            return read(*args, **kwargs)

        study._storage.get_all_trials = counted
        study.optimize(objective, n_trials=14)
        return [t.params for t in study.trials], reads

    settings = {"multivariate": True, "group": True, "constant_liar": True, "seed": 3, "n_startup_trials": 4}
    plain, plain_reads = run(optuna.samplers.TPESampler(**settings), "plain")
    once, once_reads = run(OncePerTrialTPESampler(**settings), "once")
    assert once == plain
    assert plain_reads - once_reads >= 4  # at least one read saved in each startup trial (2+ independent params)
    assert isinstance(make_sampler("tpe", seed=0), OncePerTrialTPESampler)
