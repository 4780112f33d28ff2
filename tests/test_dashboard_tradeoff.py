"""The dashboard and the MLflow UI speak ecgsearch: metric names, a note and a learning curve per trial,
checked through optuna-dashboard's own API on a real (tiny) multi-objective search; the study's MLflow
experiment is a model-training one and its parent run lists the Pareto front."""

from __future__ import annotations

import httpx
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from search.cli import main
from search.tracking import names
from studies import is_infeasible, load_study_with_definition, open_storage, pareto_front
from test_dashboard import free_port, start_dashboard, stop, wait_for


def test_dashboard_api_names_the_metrics_and_notes_every_trial(tiny_real_dir, tmp_path, monkeypatch, start_args):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'ecgsearch.db'}"
    args = ["--space", "cnn", "--study", "mo", "--objectives", "roc_auc,params", "--trials", "2", "--epochs", "2"]
    assert main(start_args(tiny_real_dir, storage, *args, "--max-params", "60000", mlflow_uri=None)) == 0
    study, definition = load_study_with_definition(open_storage(storage), "mo")
    assert definition.artifact_dir == str(tmp_path / "optuna-artifacts")

    # The MLflow UI opens the experiment on its runs, and the parent run lists the front.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment(definition.mlflow_experiment_id)
    assert experiment.tags[names.TAG_EXPERIMENT_KIND] == "custom_model_development"
    parent = client.get_run(definition.mlflow_parent_run_id).data.tags
    assert parent[names.TAG_OBJECTIVES] == "val_roc_auc,params"
    front_lines = parent[names.TAG_PARETO_FRONT].splitlines()
    assert [line.split(":")[0] for line in front_lines] == [f"trial {t.number}" for t in pareto_front(study)]

    port = free_port()
    process = start_dashboard("--storage", storage, "--port", str(port), cwd=tmp_path)
    try:
        summaries, _ = wait_for(f"http://127.0.0.1:{port}/api/studies", process)
        study_id = summaries.json()["study_summaries"][0]["study_id"]
        detail = httpx.get(f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=30).json()
        assert detail["objective_names"] == ["val_roc_auc", "params"]
        trained = 0
        for served, stored in zip(detail["trials"], study.trials, strict=True):
            note = served["note"]["body"]
            assert note.startswith(f"### Trial {stored.number}: cnn"), note
            assert "**ended**" in note and "**MLflow**" in note and f"{stored.user_attrs['n_params']:,}" in note
            assert "**constraints** (cost / limit - 1, feasible at <= 0): params " in note
            assert "| config | value |" in note and '| family | `"cnn"` |' in note  # not one long JSON line
            if stored.state == TrialState.COMPLETE:
                assert f"params = {stored.values[1]:.4g}" in note
                assert f"run {stored.user_attrs['mlflow_run_id']}" in note or "run `" in note
            if is_infeasible(stored):
                assert "PRUNED before training, infeasible before training: params" in note
                assert "no run (stopped before training" in note
            if stored.user_attrs.get("history"):
                trained += 1
                (curve,) = served["artifacts"]
                assert curve["mimetype"] == "image/svg+xml"
                url = f"http://127.0.0.1:{port}/artifacts/{study_id}/{stored._trial_id}/{curve['artifact_id']}"
                svg = httpx.get(url, timeout=30)
                assert svg.status_code == 200 and "val_roc_auc per epoch" in svg.text and "<polyline" in svg.text
        assert trained >= 1
    finally:
        code, _out, err = stop(process)
    assert code == 0, err
