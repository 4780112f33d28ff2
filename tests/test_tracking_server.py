"""The live mirror against a real (lean) `mlflow server`, as workers run it: nothing in these tests writes to
MLflow; what the workers' mirrors leave behind must equal the study database."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution

from mlflow_server import Server, assert_mirrors_study, metric_curve
from search.cli import main
from search.optimize.events import TrialEvent
from search.optimize.settings import WorkerSettings
from search.optimize.worker import run_worker
from search.tracking import TrialMirror, names, setup_study_mirror
from search.tracking.runs import find_runs
from studies import load_study_with_definition, open_storage
from study_fixtures import start_args


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """Not started: the first test runs while nothing listens; the others start it (once)."""
    server = Server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


def create_study(data: Path, storage: str, study: str, uri: str, *extra: str) -> str:
    """`start --create-only`: the study, its MLflow experiment and parent run; returns the experiment id."""
    argv = start_args(
        data, storage, "--space", "cnn", "--study", study, "--max-params", "60000", *extra, mlflow_uri=uri
    )
    assert main([*argv, "--create-only"]) == 0
    return load_study_with_definition(open_storage(storage), study)[1].mlflow_experiment_id


def test_store_down_then_up_the_mirror_catches_up_from_the_database(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is spooled: while the server is down the worker's calls still return at once, and after its
    back-off the mirror re-reads the trials it was told about and writes them whole."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    study = optuna.create_study(study_name="downup", storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    # `start` created the experiment while the server was up (here: straight into its backend database).
    ids = setup_study_mirror(tracking_uri=server.backend, study_name="downup", tags={})
    mirror = TrialMirror(
        study, tracking_uri=server.url, experiment_id=ids[0], parent_run_id=ids[1], objective="roc_auc", retry_after_s=1
    )
    calls = []
    for number, value in enumerate((0.7, 0.8)):
        trial = study.ask({"lr": FloatDistribution(1e-4, 1e-1, log=True)})
        for key, attr in {"config": {"family": "cnn"}, "n_params": 10 + number, "family": "cnn"}.items():
            trial.set_user_attr(key, attr)
        history = []
        for epoch in (1, 2):
            history.append({"epoch": epoch, "val_loss": 1.0 / epoch, "val_roc_auc": value - 0.1 / epoch})
            trial.set_user_attr("history", history)
            started = time.perf_counter()
            mirror.trial_changed(trial.number)
            calls.append(time.perf_counter() - started)
        trial.set_user_attr("val_confusion_matrix", [[1, 0], [0, 1]])
        study.tell(trial, value)
        mirror.trial_changed(trial.number)
    assert max(calls) < 0.05, calls

    server.start()
    client = MlflowClient(server.url)
    deadline = time.monotonic() + 60
    while len(find_runs(client, ids[0], {names.TAG_ROLE: names.ROLE_TRIAL})) < 2 or not client.get_run(
        ids[1]
    ).data.tags.get(names.TAG_BEST_TRIAL_NUMBER):
        assert time.monotonic() < deadline, "the mirror did not catch up after the server came back"
        time.sleep(0.5)
    assert mirror.close(60)
    assert_mirrors_study(client, study, ids[0], linked=False)  # the runs were created after the trials ended


def test_two_worker_processes_mirror_one_study_concurrently(
    server: Server, tiny_real_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `ecgsearch worker` processes, each with its background mirror, on one study; after they exit,
    MLflow equals the database: runs, states, params, curves point for point, and the parent's best."""
    server.start()
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    experiment_id = create_study(tiny_real_dir, storage, "duo", server.url, "--trials", "6", "--epochs", "3")
    worker = ["worker", "--study", "duo", "--storage", storage, "--workers", "2", "--no-progress"]
    assert main([*worker, "--mlflow-uri", server.url]) == 0
    study = optuna.load_study(study_name="duo", storage=storage)
    assert len({t.user_attrs["worker_pid"] for t in study.trials}) == 2, "one worker did all the trials"
    assert_mirrors_study(MlflowClient(server.url), study, experiment_id, linked=False)


def test_a_running_trial_shows_its_epochs_in_mlflow(
    server: Server, tiny_real_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live, per epoch: while a trial is still RUNNING in the database, its run already holds every epoch
    finished so far, and the trial already names its run."""
    server.start()
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    experiment_id = create_study(
        tiny_real_dir, storage, "epochs", server.url, "--trials", "1", "--epochs", "3", "--pruner", "none"
    )
    client = MlflowClient(server.url)
    seen: dict[int, dict] = {}

    def watch(event: TrialEvent) -> None:
        if event.kind != "epoch" or event.epoch == event.epochs:
            return
        study = optuna.load_study(study_name="epochs", storage=storage)
        deadline = time.monotonic() + 30
        while True:
            runs = find_runs(client, experiment_id, {names.TAG_ROLE: names.ROLE_TRIAL})
            steps = [step for step, _ in metric_curve(client, runs[0].info.run_id, "val_loss")] if runs else []
            trial = study.trials[event.trial_number]
            if steps == list(range(1, event.epoch + 1)) and trial.user_attrs.get("mlflow_run_id"):
                break
            assert time.monotonic() < deadline, f"epoch {event.epoch} not in MLflow while the trial runs: {steps}"
            time.sleep(0.2)
        seen[event.epoch] = {"state": trial.state, "status": runs[0].info.status, "run": runs[0].info.run_id}
        assert trial.user_attrs["mlflow_run_id"] == runs[0].info.run_id
        assert (
            trial.user_attrs["mlflow_run_url"]
            == f"{server.url}/#/experiments/{experiment_id}/runs/{runs[0].info.run_id}"
        )

    settings = WorkerSettings(study_name="epochs", storage_url=storage, mlflow_uri=server.url)
    run_worker(settings, device="cpu", on_event=watch)
    assert sorted(seen) == [1, 2]
    assert all(s["state"] == optuna.trial.TrialState.RUNNING and s["status"] == "RUNNING" for s in seen.values())
    study = optuna.load_study(study_name="epochs", storage=storage)
    assert_mirrors_study(client, study, experiment_id, linked=True)


def test_no_password_reaches_output_logs_mlflow_or_files(
    server: Server,
    tiny_real_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An MLflow URL with a password (the test server ignores basic auth) through `start` with two worker
    processes, `mlflow-sync` and `retrain --register-as`: the password is in no output (ours, MLflow's "View
    run" lines, the workers'), no log, no tag or param, no file written (the workers' command lines are read
    from /proc in tests/test_launcher.py). (It is not the word "secret": MLflow's own schema has a `secrets`
    table.)"""
    server.start()
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(tmp_path)
    password = "s3cret-Zq9"
    secret_url = server.url.replace("http://", f"http://alice:{password}@")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    start = start_args(
        tiny_real_dir, storage, "--space", "cnn", "--study", "hush", "--max-params", "60000", mlflow_uri=secret_url
    )
    assert main([*start, "--trials", "2", "--epochs", "2", "--workers", "2"]) == 0
    assert main(["mlflow-sync", "--study", "hush", "--storage", storage, "--mlflow-uri", secret_url]) == 0
    out_dir = tmp_path / "export"
    retrain = ["retrain", "--study", "hush", "--storage", storage, "--epochs", "1", "--out", str(out_dir)]
    assert main([*retrain, "--register-as", "hush-model", "--mlflow-uri", secret_url]) == 0

    captured = capfd.readouterr()
    printed = captured.out + captured.err
    assert "alice:***@" in printed and "registered as hush-model" in printed
    assert password not in printed
    assert password not in caplog.text
    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name(names.experiment_name("hush"))
    for run in client.search_runs([experiment.experiment_id]):
        assert password not in repr((run.data.tags, run.data.params)), run.info.run_name
    study = optuna.load_study(study_name="hush", storage=storage)
    assert_mirrors_study(client, study, experiment.experiment_id, linked=False)
    for folder in (tmp_path, server.artifacts, Path(server.backend.removeprefix("sqlite:///")).parent):
        for path in folder.rglob("*"):
            if path.is_file():
                assert password.encode() not in path.read_bytes(), path
