"""The MLflow side as a projection of the study database, against a local SQLite tracking store: the live
mirror (background, per change), a store that is down, and `mlflow-sync` rebuilding or completing it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from mlflow_server import assert_mirrors_study, free_port, snapshot
from search.tracking import TrialMirror, names, resolve_tracking_uri, setup_study_mirror, study_tags, sync_study
from search.tracking.projection import trial_run
from search.tracking.runs import find_runs
from search.tracking.sync import Projector
from search.tracking.uri import artifact_location
from study_fixtures import make_definition

METRIC_KEYS = ("train_loss", "val_loss", "val_roc_auc", "epoch_seconds")
DISTRIBUTIONS = {"lr": FloatDistribution(1e-6, 1e-1, log=True), "n_conv": IntDistribution(1, 4)}

# (trial number, final state, epochs run, value, reason)
SCENARIO = [
    (0, TrialState.COMPLETE, 3, 0.81, None),
    (1, TrialState.PRUNED, 2, None, None),
    (2, TrialState.COMPLETE, 3, 0.86, None),
    (3, TrialState.FAIL, 1, None, "TrainingDiverged: loss is nan at epoch 2, batch 5"),
    (4, TrialState.PRUNED, 1, None, None),
]


def epoch_metrics(number: int, epoch: int) -> dict[str, float]:
    return {
        "train_loss": 1.0 / (epoch + number),
        "val_loss": 1.2 / (epoch + number),
        "val_roc_auc": 0.5 + 0.01 * epoch + 0.001 * number,
        "epoch_seconds": 0.25 * epoch,
    }


def trial_config(number: int) -> dict:
    return {
        "family": "cnn",
        "out_channels": [16, 32 + number],
        "lr": 10 ** -(number + 2),
        "batch_norm": True,
        "epochs": 3,
        "objective": "roc_auc",
        "scheduler": None,
    }


def new_study(tmp_path: Path, name: str) -> optuna.Study:
    """A study in its own SQLite file, as workers use (trial ids then start at 1 in every test)."""
    return optuna.create_study(study_name=name, storage=f"sqlite:///{tmp_path / f'{name}.db'}", direction="maximize")


def wait_for_link(study: optuna.Study, number: int, timeout_s: float = 30.0) -> None:
    """Until the mirror wrote the run id on the running trial (a real trial lasts far longer than this test's)."""
    deadline = time.monotonic() + timeout_s
    while "mlflow_run_id" not in study._storage.get_trial(study.trials[number]._trial_id).user_attrs:
        assert time.monotonic() < deadline, f"trial {number} got no mlflow_run_id while it ran"
        time.sleep(0.05)


def play_scenario(
    study: optuna.Study, mirror: TrialMirror | None, calls: list[float] | None = None, *, linked: bool = False
) -> None:
    """SCENARIO as a worker runs it: attrs written, then `trial_changed`, at the start, after every epoch and
    at the end (once the state is in the database). The time of every `trial_changed` goes to `calls`;
    `linked`: before it ends, each trial waits for the mirror to write its run id on it."""

    def changed(number: int) -> None:
        if mirror is not None:
            started = time.perf_counter()
            mirror.trial_changed(number)
            if calls is not None:
                calls.append(time.perf_counter() - started)

    for number, state, epochs, value, reason in SCENARIO:
        study.enqueue_trial({"lr": 10 ** -(number + 2), "n_conv": 2})
        trial = study.ask(DISTRIBUTIONS)
        assert trial.number == number
        attrs = {"worker_host": "host-a", "worker_pid": 4242, "device": "cpu", "epoch": 0}
        attrs.update(config=trial_config(number), family="cnn", n_params=1000 + number)
        if number == 4:
            attrs["retried_from"] = 3
        for key, attr in attrs.items():
            trial.set_user_attr(key, attr)
        changed(number)
        history = []
        for epoch in range(1, epochs + 1):
            history.append({"epoch": epoch, **epoch_metrics(number, epoch)})
            trial.report(history[-1]["val_roc_auc"], epoch)
            trial.set_user_attr("history", history)
            changed(number)
        if linked:
            wait_for_link(study, number)
        if state == TrialState.COMPLETE:
            trial.set_user_attr("val_confusion_matrix", [[40, 2], [3, 11]])
        if state == TrialState.PRUNED:
            trial.set_user_attr("pruned_at_epoch", epochs)
        if reason:
            trial.set_user_attr("fail_reason", reason)
        study.tell(trial, value, state=state)
        changed(number)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite tracking store for the module (creating one costs ≈3 s of migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def parent_tags(study: str) -> dict[str, str]:
    return study_tags(
        study_name=study,
        space="cnn",
        storage_url="postgresql+psycopg://bob:s3cret@db:5432/ecg",
        sampler="tpe",
        pruner="hyperband",
        objective="roc_auc",
        direction="maximize",
    )


def make_mirror(study: optuna.Study, uri: str, ids: tuple[str, str], **kwargs) -> TrialMirror:
    return TrialMirror(
        study, tracking_uri=uri, experiment_id=ids[0], parent_run_id=ids[1], objective="roc_auc", **kwargs
    )


def test_resolve_tracking_uri_reads_no_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")  # the CLI's business, not the resolver's
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "studies" / "ecg.db"
    assert resolve_tracking_uri(None, f"sqlite:///{db}") == f"sqlite:///{db.parent / 'mlflow.db'}"
    assert resolve_tracking_uri(None, "sqlite:///rel/ecg.db") == f"sqlite:///{tmp_path / 'rel' / 'mlflow.db'}"
    assert resolve_tracking_uri(None, "postgresql+psycopg://u:p@h/db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_tracking_uri("http://mlflow:5000", "sqlite:///x.db") == "http://mlflow:5000"
    assert resolve_tracking_uri(" off ", "sqlite:///x.db", "http://stored:5000") is None
    assert resolve_tracking_uri(None, "sqlite:///x.db", "http://stored:5000") == "http://stored:5000"
    assert resolve_tracking_uri("sqlite:///cli.db", "sqlite:///x.db", "http://stored:5000") == "sqlite:///cli.db"
    # A stored URI whose password was masked cannot connect: the default store is used instead.
    masked = "http://bob:***@stored:5000"
    assert resolve_tracking_uri(None, f"sqlite:///{db}", masked) == f"sqlite:///{db.parent / 'mlflow.db'}"
    assert (
        artifact_location(f"sqlite:///{db.parent / 'mlflow.db'}", "my study")
        == (db.parent / "mlartifacts" / "my_study").as_uri()
    )
    assert artifact_location("http://mlflow:5000", "s") is None


@pytest.fixture(scope="module")
def live(store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """SCENARIO mirrored live into study "live"; the reference state of a complete mirror."""
    study = new_study(tmp_path_factory.mktemp("live"), "live")
    ids = setup_study_mirror(tracking_uri=store, study_name="live", tags=parent_tags("live"))
    calls: list[float] = []
    mirror = make_mirror(study, store, ids)
    play_scenario(study, mirror, calls, linked=True)
    started = time.perf_counter()
    assert mirror.close(60)
    return {
        "study": study,
        "ids": ids,
        "calls": calls,
        "close_s": time.perf_counter() - started,
        "snapshot": snapshot(MlflowClient(store), ids[0], "live"),
    }


def test_live_mirror_of_five_trials(store: str, live: dict, tmp_path: Path) -> None:
    study, ids = live["study"], live["ids"]
    assert setup_study_mirror(tracking_uri=store, study_name="live", tags=parent_tags("live")) == ids
    client = MlflowClient(store)
    experiment = client.get_experiment(ids[0])
    assert experiment.name == "ecgsearch/live"
    assert experiment.artifact_location.endswith("/mlartifacts/live")
    assert_mirrors_study(client, study, ids[0], linked=True)

    snap = live["snapshot"]
    parent = snap["parent"]["tags"]
    assert parent[names.TAG_STORAGE] == "postgresql+psycopg://bob:***@db:5432/ecg"
    assert (parent[names.TAG_BEST_VALUE], parent[names.TAG_BEST_TRIAL_NUMBER]) == ("0.86", "2")
    assert [(step, value) for step, value, _ in snap["parent"]["best_value"]] == [
        (0, 0.81),
        (1, 0.81),
        (2, 0.86),
        (3, 0.86),
        (4, 0.86),
    ]
    for number, _state, epochs, _value, _reason in SCENARIO:
        run = snap[number]
        assert run["params"]["config.out_channels"] == f"[16, {32 + number}]"
        assert run["params"]["config.scheduler"] == "null"
        for key in METRIC_KEYS:
            assert [p[:2] for p in run["metrics"][key]] == [
                (e, epoch_metrics(number, e)[key]) for e in range(1, epochs + 1)
            ]
        # Stamped from the trial (its start plus the epoch seconds so far), not from when it was sent.
        start_ms = int(study.trials[number].datetime_start.timestamp() * 1000)
        assert run["metrics"]["val_loss"][0][2] == start_ms + 250
        assert run["times"][0] == start_ms
    # The worker's side of it: recording a number, never a request to MLflow.
    calls = sorted(live["calls"])
    assert len(calls) == 5 * 2 + sum(s[2] for s in SCENARIO)
    assert calls[len(calls) // 2] < 0.001 and calls[-1] < 0.05, calls

    # One builder: `mlflow-sync` of the same database into an empty store writes exactly what the live mirror
    # wrote (timestamps included), and a second sync changes nothing.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    summary = sync_study(
        study, tracking_uri=other, experiment_id=None, parent_run_id=None, study_tags=parent_tags("live")
    )
    assert (summary["created"], summary["updated"], summary["unchanged"]) == (5, 0, 0)
    assert snapshot(MlflowClient(other), summary["experiment_id"], "live") == snap
    again = sync_study(
        study, tracking_uri=store, experiment_id=ids[0], parent_run_id=ids[1], study_tags=parent_tags("live")
    )
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 5)
    assert snapshot(client, ids[0], "live") == snap


def test_store_down_costs_the_worker_nothing_and_sync_completes(
    store: str, live: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="search.tracking")
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)  # the mirror bounds its requests process-wide: undone afterwards
    study = new_study(tmp_path, "offline")
    ids = setup_study_mirror(tracking_uri=store, study_name="offline", tags=parent_tags("offline"))
    down = f"http://alice:s3cret-Zq9@127.0.0.1:{free_port()}"
    mirror = make_mirror(study, down, ids, timeout_s=1.0, retry_after_s=0.2)
    calls: list[float] = []
    play_scenario(study, mirror, calls)
    assert max(calls) < 0.05, calls
    started = time.perf_counter()
    assert not mirror.close(2)  # tries again until the deadline: nothing listens
    assert 1.5 < time.perf_counter() - started < 10
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("search.tracking")]
    assert len(warnings) == 2, warnings  # one per outage (the retries are silent), one at close
    assert "alice:***@127.0.0.1" in warnings[0] and "mlflow-sync" in warnings[0]
    assert "trials 0, 1, 2, 3, 4" in warnings[1]
    assert "s3cret-Zq9" not in caplog.text
    client = MlflowClient(store)
    assert not find_runs(client, ids[0], {names.TAG_STUDY: "offline", names.TAG_ROLE: names.ROLE_TRIAL})

    summary = sync_study(
        study, tracking_uri=store, experiment_id=ids[0], parent_run_id=ids[1], study_tags=parent_tags("offline")
    )
    assert summary["created"] == 5
    assert_mirrors_study(client, study, ids[0], linked=False)  # a finished trial's attrs cannot change
    reference = {k: v for k, v in snapshot(client, live["ids"][0], "live", timestamps=False).items() if k != "parent"}
    assert {
        k: v for k, v in snapshot(client, ids[0], "offline", timestamps=False).items() if k != "parent"
    } == reference


def test_refused_run_is_warned_once_and_does_not_stop_the_sender(store: str, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="search.tracking")
    study = new_study(tmp_path, "bogus")
    mirror = make_mirror(study, store, ("987654321", "0" * 32))
    trial = study.ask(DISTRIBUTIONS)
    trial.set_user_attr("n_params", 10)
    for _ in range(3):
        mirror.trial_changed(trial.number)
        time.sleep(0.2)
    assert not mirror.close(30)
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "trial 0" in refusals[0].getMessage()
    assert "trial 0 of study bogus not mirrored yet" in caplog.text


def test_parent_best_is_rederived_from_the_database(store: str, live: dict) -> None:
    """A writer that read the database before another trial finished may land its best tags last; the next
    derivation from the database puts the truth back, and re-deriving never duplicates a point."""
    study, (_, parent_run_id) = live["study"], live["ids"]
    client = MlflowClient(store)
    client.set_tag(parent_run_id, names.TAG_BEST_TRIAL_NUMBER, "0")
    client.set_tag(parent_run_id, names.TAG_BEST_VALUE, "0.81")
    projector = Projector(
        client, study_name="live", experiment_id=live["ids"][0], parent_run_id=parent_run_id, objective="roc_auc"
    )
    assert projector.sync_parent(study)
    assert not projector.sync_parent(study)
    assert snapshot(client, live["ids"][0], "live") == live["snapshot"]


def optuna_study(name: str) -> optuna.Study:
    study = optuna.create_study(study_name=name, direction="maximize")

    def add(number: int, state: TrialState, value: float | None, epochs: int, *, history: bool) -> None:
        attrs = {
            "config": trial_config(number),
            "n_params": 2000 + number,
            "worker_host": "h1",
            "worker_pid": 7,
            "device": "cpu",
            "family": "cnn",
        }
        if history:
            attrs["history"] = [{"epoch": e, **epoch_metrics(number, e)} for e in range(1, epochs + 1)]
        if state == TrialState.PRUNED:
            attrs["pruned_at_epoch"] = epochs
        if state == TrialState.FAIL:
            attrs["fail_reason"] = "CUDA out of memory"
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"lr": 10 ** -(number + 2), "n_conv": 2},
                distributions=DISTRIBUTIONS,
                user_attrs=attrs,
                intermediate_values={e: epoch_metrics(number, e)["val_roc_auc"] for e in range(1, epochs + 1)},
            )
        )

    add(0, TrialState.COMPLETE, 0.8, 3, history=True)
    add(1, TrialState.PRUNED, None, 2, history=True)
    add(2, TrialState.COMPLETE, 0.9, 2, history=False)  # an older worker: intermediate values only
    add(3, TrialState.FAIL, None, 1, history=True)
    return study


def test_builder_needs_only_the_trial() -> None:
    study = optuna_study("builder")
    complete, pruned, older, failed = study.trials
    update = trial_run(complete, objective="roc_auc")
    assert update.status == "FINISHED" and update.tags[names.TAG_STATE] == "COMPLETE"
    assert update.once[names.METRIC_OBJECTIVE][:3] == (names.METRIC_OBJECTIVE, 3, 0.8)
    assert sorted(update.artifacts) == [names.ARTIFACT_CURVES]  # no confusion matrix stored on this trial
    assert trial_run(pruned, objective="roc_auc").tags[names.TAG_PRUNED_AT_EPOCH] == "2"
    assert {p.key for p in trial_run(older, objective="roc_auc").points} == {"val_roc_auc"}
    assert trial_run(failed, objective="roc_auc").tags[names.TAG_FAIL_REASON] == "CUDA out of memory"


def test_sync_rebuilds_from_optuna_and_is_idempotent(store: str) -> None:
    study = optuna_study("synced")
    tags = parent_tags("synced")
    summary = sync_study(study, tracking_uri=store, experiment_id=None, parent_run_id=None, study_tags=tags)
    assert (summary["created"], summary["updated"], summary["unchanged"]) == (4, 0, 0)
    client = MlflowClient(store)
    snap = snapshot(client, summary["experiment_id"], "synced", timestamps=False)
    assert [snap[n]["status"] for n in range(4)] == ["FINISHED", "KILLED", "FINISHED", "FAILED"]
    assert snap[0]["metrics"]["val_loss"] == [(e, epoch_metrics(0, e)["val_loss"]) for e in (1, 2, 3)]
    assert snap[0]["metrics"]["objective"] == [(3, 0.8)]
    assert snap[0]["artifacts"] == ["plots/training_curves.html"]
    assert snap[2]["metrics"]["val_roc_auc"] == [(e, epoch_metrics(2, e)["val_roc_auc"]) for e in (1, 2)]
    assert "val_loss" not in snap[2]["metrics"]
    assert snap[1]["tags"][names.TAG_PRUNED_AT_EPOCH] == "2"
    assert snap[3]["tags"][names.TAG_FAIL_REASON] == "CUDA out of memory"
    assert snap[3]["tags"][names.TAG_WORKER_PID] == "7"
    assert snap[1]["metrics"]["n_params"] == [(0, 2001.0)]
    assert snap["parent"]["best_value"] == [(0, 0.8), (1, 0.8), (2, 0.9), (3, 0.9)]
    assert snap["parent"]["tags"][names.TAG_BEST_TRIAL_NUMBER] == "2"

    again = sync_study(
        study,
        tracking_uri=store,
        experiment_id=summary["experiment_id"],
        parent_run_id=summary["parent_run_id"],
        study_tags=tags,
    )
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 4)
    assert again["parent_run_id"] == summary["parent_run_id"]
    assert snapshot(client, summary["experiment_id"], "synced", timestamps=False) == snap


def test_sync_completes_what_a_dead_worker_left(store: str, tmp_path: Path) -> None:
    study = new_study(tmp_path, "partial")
    tags = parent_tags("partial")
    ids = setup_study_mirror(tracking_uri=store, study_name="partial", tags=tags)
    mirror = make_mirror(study, store, ids)
    trial = study.ask(DISTRIBUTIONS)
    trial.set_user_attr("config", trial_config(0))
    trial.set_user_attr("n_params", 10)
    history = [{"epoch": 1, **epoch_metrics(0, 1)}]
    trial.set_user_attr("history", history)
    mirror.trial_changed(trial.number)
    assert mirror.close(30)  # then the worker dies: nothing more reaches MLflow from it
    history += [{"epoch": e, **epoch_metrics(0, e)} for e in (2, 3)]  # (what a retry or the database holds)
    trial.set_user_attr("history", history)
    study.tell(trial, 0.8)

    summary = sync_study(study, tracking_uri=store, experiment_id=ids[0], parent_run_id=ids[1], study_tags=tags)
    assert (summary["created"], summary["updated"], summary["unchanged"]) == (0, 1, 0)
    client = MlflowClient(store)
    snap = snapshot(client, ids[0], "partial", timestamps=False)
    assert snap[0]["metrics"]["train_loss"] == [(e, epoch_metrics(0, e)["train_loss"]) for e in (1, 2, 3)]
    assert snap[0]["status"] == "FINISHED"


def test_mlflow_sync_command(store: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from search.cli import main
    from studies import write_definition

    storage = f"sqlite:///{tmp_path / 'ecg.db'}"
    study = optuna.create_study(study_name="cli", storage=storage, direction="maximize")
    write_definition(
        study,
        make_definition(
            data_path="data/x", data_fingerprint="f" * 64, seq_len=360, epochs=3, sampler="random", pruner="median"
        ),
    )
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=0.7,
            params={"n_conv": 2},
            distributions={"n_conv": IntDistribution(1, 4)},
            intermediate_values={1: 0.6, 2: 0.7},
        )
    )
    argv = ["mlflow-sync", "--study", "cli", "--storage", storage, "--mlflow-uri", store]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 runs created, 0 updated, 0 unchanged" in out
    assert main(argv) == 0
    assert "0 runs created, 0 updated, 1 unchanged" in capsys.readouterr().out
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("ecgsearch/cli")
    (run,) = find_runs(client, experiment.experiment_id, {names.TAG_STUDY: "cli", names.TAG_ROLE: "trial"})
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_roc_auc")] == [
        (1, 0.6),
        (2, 0.7),
    ]
    assert main(["mlflow-sync", "--study", "nope", "--storage", storage, "--mlflow-uri", store]) == 5

    # A tracking server that is not there: one masked paragraph and the storage exit code, no traceback.
    capsys.readouterr()
    down = f"http://alice:s3cret-Zq9@127.0.0.1:{free_port()}"
    assert main(["mlflow-sync", "--study", "cli", "--storage", storage, "--mlflow-uri", down]) == 4
    captured = capsys.readouterr()
    assert "alice:***@127.0.0.1" in captured.err and "s3cret-Zq9" not in captured.out + captured.err
    assert "Traceback" not in captured.err
