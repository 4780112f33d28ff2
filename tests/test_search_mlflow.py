"""`ecgsearch start` mirrors every trial into MLflow; with the server down, `mlflow-sync` catches up later."""

from __future__ import annotations

from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from mlflow_server import Server, assert_mirrors_study, snapshot
from search.cli import main
from search.tracking import names
from studies import load_study_with_definition, open_storage, trials_used
from study_fixtures import start_args


def test_start_mirrors_every_trial_to_the_local_store(tiny_real_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code = main(
        start_args(
            tiny_real_dir,
            storage,
            "--space",
            "cnn",
            "--trials",
            "5",
            "--epochs",
            "3",
            "--max-params",
            "60000",
            mlflow_uri=None,
        )
    )
    assert code == 0
    assert (tmp_path / "mlflow.db").exists(), "the default store lives beside the study database"
    study, definition = load_study_with_definition(open_storage(storage), "cnn")
    assert trials_used(study) == 5
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    # The worker's mirror alone (no `mlflow-sync`) left MLflow equal to the database.
    assert_mirrors_study(client, study, definition.mlflow_experiment_id, linked=False)
    assert any(t.user_attrs.get("mlflow_run_id") for t in study.trials)


def test_server_down_then_mlflow_sync_catches_up(tiny_real_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server = Server(tmp_path / "server")
    (tmp_path / "server").mkdir()
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    try:
        code = main(
            start_args(
                tiny_real_dir,
                storage,
                "--space",
                "cnn",
                "--trials",
                "3",
                "--epochs",
                "2",
                "--max-params",
                "60000",
                mlflow_uri=server.url,
            )
        )
        assert code == 0, "the search must finish with the tracking server down"
        study = optuna.load_study(study_name="cnn", storage=open_storage(storage))
        assert trials_used(study) == 3

        server.start()
        sync = ["mlflow-sync", "--study", "cnn", "--storage", storage, "--mlflow-uri", server.url]
        assert main(sync) == 0
        client = MlflowClient(tracking_uri=server.url)
        experiment = client.get_experiment_by_name(names.experiment_name("cnn"))
        assert_mirrors_study(client, study, experiment.experiment_id, linked=False)
        synced = snapshot(client, experiment.experiment_id, "cnn")
        assert main(sync) == 0  # a second sync changes nothing, duplicates nothing
        assert snapshot(client, experiment.experiment_id, "cnn") == synced

        # Resuming with the server up mirrors live, into the same experiment, and links each run.
        code = main(start_args(tiny_real_dir, storage, "--space", "cnn", "--trials", "4", mlflow_uri=server.url))
        assert code == 0
        study = optuna.load_study(study_name="cnn", storage=open_storage(storage))
        assert_mirrors_study(client, study, experiment.experiment_id, linked=False)
        last = max(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)), key=lambda t: t.number)
        run_id = last.user_attrs["mlflow_run_id"]
        expected = f"{server.url}/#/experiments/{experiment.experiment_id}/runs/{run_id}"
        assert last.user_attrs["mlflow_run_url"] == expected
    finally:
        server.stop()


def test_mirroring_off_leaves_no_store(tiny_real_dir, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert (
        main(
            start_args(
                tiny_real_dir, storage, "--space", "cnn", "--trials", "1", "--epochs", "1", "--max-params", "60000"
            )
        )
        == 0
    )
    assert not (tmp_path / "mlflow.db").exists()


def test_same_study_name_in_two_databases_gets_two_experiments(tiny_real_dir, tmp_path, monkeypatch):
    """One tracking store, two study databases, one study name: neither study's runs mix into the other's."""
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'shared-mlflow.db'}"
    experiments = []
    for folder in ("alice", "bob"):
        (tmp_path / folder).mkdir()
        storage = f"sqlite:///{tmp_path / folder / 'study.db'}"
        assert (
            main(
                start_args(
                    tiny_real_dir,
                    storage,
                    "--space",
                    "cnn",
                    "--trials",
                    "1",
                    "--epochs",
                    "1",
                    "--max-params",
                    "60000",
                    mlflow_uri=store,
                )
            )
            == 0
        )
        study, definition = load_study_with_definition(open_storage(storage), "cnn")
        experiments.append(definition.mlflow_experiment_id)
        assert_mirrors_study(MlflowClient(tracking_uri=store), study, definition.mlflow_experiment_id, linked=False)
    assert experiments[0] != experiments[1]
    names_seen = [MlflowClient(tracking_uri=store).get_experiment(e).name for e in experiments]
    assert names_seen[0] == "ecgsearch/cnn" and names_seen[1].startswith("ecgsearch/cnn@")
