"""`ecgsearch retrain`: a small real study -> best trial retrained from scratch -> export bundle + MLflow.

The study is what a worker leaves behind: a definition in the study's user attributes and trials
trained for real (tiny models, small MIT-BIH slice) with their flat config in user attr `config`.
The study and its bundles come from tests/retrained_study.py, cached per test session.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from retrained_study import (
    EMPTY_STUDY,
    EVENTS,
    REGISTERED_NAME,
    STUDY,
    STUDY_EPOCHS,
    TINY_CNN,
    ensemble_bundle,
    member_scores,
    retrained,
    small_study,
)
from search.cli import main
from search.data import load_dataset
from search.errors import EXIT_DATA, EXIT_NOTHING_TO_DO, EXIT_STUDY
from search.ship.bundle import BUNDLE_FILES, load_bundle
from search.ship.publish import MlflowOutcome
from search.ship.retrain import RetrainSettings, default_patience, retrain
from search.ship.seeds import EpochDone, SeedFinished, SeedStarted
from search.training.metrics import choose_threshold, classification_metrics
from studies import NoCompletedTrial, StudyMismatch, TrialNotUsable


def _metrics(bundle: Path) -> dict:
    return json.loads((bundle / "metrics.json").read_text())


def test_best_trial_retrained_into_a_complete_bundle(small_real_dir, session_root):
    study, result = retrained(small_real_dir, session_root, "best")
    assert result.trial_number == study.best_number
    assert sorted(p.name for p in result.out.iterdir()) == sorted(BUNDLE_FILES)

    config = json.loads((result.out / "config.json").read_text())
    dataset = load_dataset(small_real_dir)
    _, norm = dataset.normalised()
    assert config["family"] == "cnn" and config["autoencoder"] is False
    assert config["score_kind"] == "probability"
    assert config["threshold"] == pytest.approx(_training_cut(result.out, dataset), rel=1e-5)
    assert config["n_channels"] == 3 and config["window_length"] == 2000
    assert config["leads"] == ["II", "V1", "V5"] and config["sampling_rate_hz"] == 200
    assert config["normalisation"] == norm.to_dict()
    assert config["model_params"] == TINY_CNN
    # The exported config is the trial's config with the retraining budget and the exported seed.
    assert config["config"]["epochs"] == STUDY_EPOCHS and config["config"]["lr"] == 3e-3
    assert config["config"]["patience"] == default_patience(STUDY_EPOCHS)

    metrics = _metrics(result.out)
    assert metrics["study"] == STUDY and metrics["trial_number"] == study.best_number
    assert metrics["data_fingerprint"] == dataset.fingerprint()
    assert metrics["exported_seed"] == 0 and len(metrics["seeds"]) == 1
    for key in ("f1_macro", "f1_0", "f1_1", "precision_macro", "recall_macro", "roc_auc", "pr_auc", "accuracy"):
        assert 0.0 <= metrics["test"][key] <= 1.0, key
        assert 0.0 <= metrics["validation"][key] <= 1.0, key
    assert np.array(metrics["test"]["confusion_matrix"]).sum() == len(dataset.y_test)
    assert metrics["test_summary"]["roc_auc"] == {"mean": metrics["test"]["roc_auc"], "std": None}
    assert metrics["onnx_max_abs_diff"] < 1e-4
    assert {"ecgsearch", "torch", "optuna", "onnx"} <= metrics["versions"].keys()
    assert 1 <= metrics["seeds"][0]["best_epoch"] <= metrics["seeds"][0]["epochs_run"] <= STUDY_EPOCHS


def test_bundle_is_logged_under_the_study_parent_run_and_registered(small_real_dir, session_root):
    import mlflow

    study, result = retrained(small_real_dir, session_root, "best")
    logged_run = result.mlflow.run
    assert logged_run is not None and logged_run.registered_version == "1"
    client = mlflow.MlflowClient(study.mlflow_uri)
    run = client.get_run(logged_run.run_id)
    assert run.info.experiment_id == study.experiment_id
    assert run.data.tags["mlflow.parentRunId"] == study.parent_run_id
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_roc_auc"] == pytest.approx(_metrics(result.out)["test"]["roc_auc"])
    assert run.data.params["config.family"] == "cnn"
    logged = {Path(a.path).name for a in client.list_artifacts(logged_run.run_id, "bundle")}
    assert {"config.json", "metrics.json", "model.pt", "README.md"} <= logged

    versions = client.search_model_versions(f"name='{REGISTERED_NAME}'")
    assert [(v.version, v.run_id) for v in versions] == [(1, logged_run.run_id)]
    info = mlflow.models.get_model_info(logged_run.model_uri)
    assert info.signature is not None and info.flavors.keys() >= {"onnx", "python_function"}
    # The registered model scores like the bundle.
    mlflow.set_tracking_uri(study.mlflow_uri)
    served = mlflow.pyfunc.load_model(f"models:/{REGISTERED_NAME}/1")
    bundle = load_bundle(result.out)
    X = load_dataset(small_real_dir).X_test[:5]
    out = served.predict(bundle.norm.apply(X).numpy())
    scores = out["score"] if isinstance(out, dict) else np.asarray(out).reshape(-1)
    np.testing.assert_allclose(np.asarray(scores).reshape(-1), bundle.score(X), atol=1e-5)


def test_two_seeds_give_mean_and_std_and_export_the_best_on_validation(small_real_dir, session_root):
    _, result = retrained(small_real_dir, session_root, "seeds")
    metrics = _metrics(result.out)
    per_seed = metrics["seeds"]
    assert [s["seed"] for s in per_seed] == [0, 1]
    best_val = max(per_seed, key=lambda s: s["validation"]["roc_auc"])
    assert metrics["exported_seed"] == best_val["seed"] and result.exported.seeds == [best_val["seed"]]
    assert metrics["ensemble_seeds"] is None
    assert metrics["test"] == best_val["test"]
    for name in ("roc_auc", "f1_macro", "accuracy"):
        values = [s["test"][name] for s in per_seed]
        assert metrics["test_summary"][name]["mean"] == pytest.approx(np.mean(values))
        assert metrics["test_summary"][name]["std"] == pytest.approx(np.std(values, ddof=1))
    # Two seeds are two different initialisations, not one run twice.
    assert per_seed[0]["validation"] != per_seed[1]["validation"] or per_seed[0]["test"] != per_seed[1]["test"]
    assert result.mlflow == MlflowOutcome(uri=None, run=None, error=None, register_as="ignored-when-off")


def _training_cut(bundle_dir: Path, dataset) -> float:
    """The threshold rule for objective roc_auc (which does not depend on a cut): F1 macro on the training
    windows, all of them here (fewer than search.training.threshold.THRESHOLD_SAMPLE_MIN)."""
    return choose_threshold(load_bundle(bundle_dir).score(dataset.X_train), dataset.y_train, "f1_macro")


def test_autoencoder_trial_threshold_is_chosen_on_training_windows(small_real_dir, session_root):
    study, result = retrained(small_real_dir, session_root, "ae")
    assert result.trial_number == study.ae_number
    bundle = load_bundle(result.out)
    assert bundle.autoencoder and bundle.score_kind == "reconstruction_error"
    dataset = load_dataset(small_real_dir)
    val_errors = bundle.score(dataset.X_val)
    assert bundle.threshold == pytest.approx(_training_cut(result.out, dataset), rel=1e-5)
    validation = classification_metrics(dataset.y_val, val_errors, bundle.threshold)
    assert _metrics(result.out)["validation"]["f1_macro"] == pytest.approx(validation["f1_macro"])
    assert _metrics(result.out)["validation"]["confusion_matrix"] == validation["confusion_matrix"]


def test_retrain_named_trial_that_is_not_complete_is_refused(small_real_dir, session_root):
    study = small_study(small_real_dir, session_root)
    with pytest.raises(TrialNotUsable, match=rf"--trial {study.pruned_number}: the trial is PRUNED"):
        retrain(RetrainSettings(STUDY, storage=study.storage_url, trial_number=study.pruned_number))
    with pytest.raises(TrialNotUsable, match="no such trial"):
        retrain(RetrainSettings(STUDY, storage=study.storage_url, trial_number=99))


def test_study_without_complete_trial_exits_nothing_to_do(small_real_dir, session_root, tmp_path, capsys):
    study = small_study(small_real_dir, session_root)
    with pytest.raises(NoCompletedTrial, match="no COMPLETE trial"):
        retrain(RetrainSettings(EMPTY_STUDY, storage=study.storage_url))
    code = main(["retrain", "--study", EMPTY_STUDY, "--storage", study.storage_url, "--out", str(tmp_path / "x")])
    assert code == EXIT_NOTHING_TO_DO == 6
    assert "no COMPLETE trial" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_other_data_is_refused_as_a_study_mismatch(small_real_dir, tiny_real_dir, session_root, tmp_path, capsys):
    study = small_study(small_real_dir, session_root)
    with pytest.raises(StudyMismatch, match="data_fingerprint"):
        retrain(RetrainSettings(STUDY, storage=study.storage_url, data=tiny_real_dir))
    code = main(
        [
            "retrain",
            "--study",
            STUDY,
            "--storage",
            study.storage_url,
            "--data",
            str(tiny_real_dir),
            "--out",
            str(tmp_path / "x"),
            "--mlflow-uri",
            "off",
        ]
    )
    assert code == EXIT_STUDY
    assert str(tiny_real_dir) in capsys.readouterr().err


def test_cli_retrain_with_mlflow_unreachable_still_exports(small_real_dir, session_root, tmp_path, capsys):
    study = small_study(small_real_dir, session_root)
    out = tmp_path / "bundle"
    code = main(
        [
            "retrain",
            "--study",
            STUDY,
            "--storage",
            study.storage_url,
            "--epochs",
            "1",
            "--out",
            str(out),
            "--mlflow-uri",
            "http://127.0.0.1:9",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(BUNDLE_FILES)
    printed = capsys.readouterr().out
    assert "could not take the model" in printed and "is complete" in printed
    assert "test metrics" in printed and "roc_auc" in printed
    assert _metrics(out)["epochs"] == 1


def test_secrets_never_reach_the_bundle_or_mlflow(small_real_dir, session_root, postgres_url, tmp_path):
    """A PostgreSQL study URL with a password, MLflow in a store the study never used: the bundle holds
    the URL only masked, and the run goes under the study's parent run, created there for it."""
    import mlflow

    from search.tracking import names

    study = small_study(small_real_dir, session_root)
    password = "s3cret-pw-for-retrain"
    url_with_password = postgres_url.replace("postgres@", f"postgres:{password}@")  # trust auth ignores it
    optuna.copy_study(from_study_name=STUDY, from_storage=study.storage_url, to_storage=url_with_password)
    fresh_store = f"sqlite:///{tmp_path / 'other-mlflow.db'}"
    result = retrain(
        RetrainSettings(STUDY, storage=url_with_password, epochs=1, out=tmp_path / "b", mlflow_uri=fresh_store)
    )
    for path in result.out.iterdir():
        assert password.encode() not in path.read_bytes(), path.name
    assert "***" in _metrics(result.out)["storage"]

    client = mlflow.MlflowClient(fresh_store)
    run = client.get_run(result.mlflow.run.run_id)
    parent = client.get_run(run.data.tags[names.TAG_PARENT_RUN_ID])
    assert parent.data.tags[names.TAG_ROLE] == names.ROLE_STUDY and parent.data.tags[names.TAG_STUDY] == STUDY
    assert run.data.tags[names.TAG_ROLE] == "retrain"
    assert client.get_experiment(run.info.experiment_id).name == f"ecgsearch/{STUDY}"
    logged = json.dumps([run.data.params, run.data.tags, parent.data.params, parent.data.tags])
    assert password not in logged


def test_retrain_help_has_an_example(capsys):
    assert main(["retrain", "--help"]) == 0
    text = capsys.readouterr().out
    assert "Example:" in text and "--seeds" in text and "--register-as" in text


def test_default_patience_is_a_quarter_of_the_budget_at_least_three():
    assert [default_patience(e) for e in (1, 8, 12, 40)] == [3, 3, 3, 10]


def test_moved_data_is_a_data_error_that_points_at_the_data_flag(small_real_dir, session_root, tmp_path, capsys):
    from studies import read_definition, write_definition

    study = small_study(small_real_dir, session_root)
    url = f"sqlite:///{tmp_path / 'moved.db'}"
    optuna.copy_study(from_study_name=STUDY, from_storage=study.storage_url, to_storage=url)
    moved = optuna.load_study(study_name=STUDY, storage=url)
    definition = read_definition(moved)
    definition.data_path = str(tmp_path / "gone")
    write_definition(moved, definition)
    code = main(["retrain", "--study", STUDY, "--storage", url, "--mlflow-uri", "off", "--out", str(tmp_path / "b")])
    assert code == EXIT_DATA
    err = " ".join(capsys.readouterr().err.split())
    assert "gone" in err and "pass --data DIR" in err


def test_progress_events_follow_each_seed_from_start_to_finish(small_real_dir, session_root):
    _, result = retrained(small_real_dir, session_root, "seeds")
    expected: list[type] = []
    for seed in result.seeds:
        expected += [SeedStarted, *[EpochDone] * seed.epochs_run, SeedFinished]
    events = EVENTS["seeds"]
    assert [type(e) for e in events] == expected
    assert [e.seed for e in events if isinstance(e, SeedStarted)] == [0, 1]
    assert all(e.epochs == STUDY_EPOCHS for e in events if isinstance(e, SeedStarted))
    finished = [e for e in events if isinstance(e, SeedFinished)]
    assert [(e.seed, e.best_epoch) for e in finished] == [(s.seed, s.best_epoch) for s in result.seeds]
    assert [e.val_value for e in finished] == [s.val_metrics["roc_auc"] for s in result.seeds]
    epochs = [e for e in events if isinstance(e, EpochDone)]
    assert [e.epoch for e in epochs if e.seed == 0] == list(range(1, result.seeds[0].epochs_run + 1))
    assert {"train_loss", "val_loss", "val_roc_auc"} <= epochs[0].metrics.keys()


def _threshold_by_rule(bundle, dataset) -> float:
    """The threshold `fit`'s one rule gives, chosen on an exported bundle's own scores: the F1-macro cut (the
    objective roc_auc does not depend on a cut) on training windows (the small slice's training split is
    smaller than the rule's sample, so the sample is all of it)."""
    return choose_threshold(bundle.score(dataset.X_train), dataset.y_train, "f1_macro")


def test_ensemble_exports_the_mean_of_the_seeds_scores(small_real_dir, session_root):
    out, printed = ensemble_bundle(small_real_dir, session_root)
    assert sorted(p.name for p in out.iterdir()) == sorted(BUNDLE_FILES)
    config = json.loads((out / "config.json").read_text())
    assert config["ensemble"] == 2 and config["seeds"] == [0, 1] and config["config"]["seed"] == 0
    assert config["threshold"] == pytest.approx(_threshold_by_rule(load_bundle(out), load_dataset(small_real_dir)))
    metrics = _metrics(out)
    assert metrics["exported_seed"] is None and metrics["ensemble_seeds"] == [0, 1]
    assert [s["seed"] for s in metrics["seeds"]] == [0, 1]
    assert metrics["onnx_max_abs_diff"] < 1e-4

    # The ensemble's own validation and test metrics, beside the per-seed ones: those of the mean score.
    dataset = load_dataset(small_real_dir)
    normalised, _ = dataset.normalised()
    for split, X, y in (("validation", normalised.X_val, dataset.y_val), ("test", normalised.X_test, dataset.y_test)):
        mean = np.mean(member_scores(out, X), axis=0)
        reproduced = classification_metrics(y, mean, config["threshold"])
        assert metrics[split]["confusion_matrix"] == reproduced["confusion_matrix"], split
        assert metrics[split]["roc_auc"] == pytest.approx(reproduced["roc_auc"], abs=1e-6), split
    # The members are the seeds trained on their own: seed by seed the same weights as `--seeds 2` trains.
    _, seeds_result = retrained(small_real_dir, session_root, "seeds")
    exported = seeds_result.exported.seeds[0]
    member = torch.load(out / "model.pt", weights_only=True)[exported]
    single = torch.load(seeds_result.out / "model.pt", weights_only=True)
    assert member.keys() == single.keys() and all(torch.equal(member[k], single[k]) for k in member)

    text = " ".join(printed.split())
    assert "exporting their ensemble" in text and "exported the ensemble of seeds 0, 1" in text
    assert "ensemble" in printed and "mean ± std" in printed and "MLflow off" in text


def test_autoencoder_ensemble_threshold_is_chosen_like_one_models(small_real_dir, session_root):
    _, result = retrained(small_real_dir, session_root, "ae-ensemble")
    assert result.exported.ensemble and result.exported.seeds == [0, 1]
    bundle = load_bundle(result.out)
    assert bundle.ensemble == 2 and bundle.score_kind == "reconstruction_error"
    dataset = load_dataset(small_real_dir)
    normalised, _ = dataset.normalised()
    val_errors = bundle.score(dataset.X_val)
    # The mean of the seeds' reconstruction errors, not the error of a mean reconstruction.
    np.testing.assert_allclose(val_errors, np.mean(member_scores(result.out, normalised.X_val), axis=0), rtol=1e-5)
    assert bundle.threshold == pytest.approx(_threshold_by_rule(bundle, dataset), rel=1e-5)
    assert (
        _metrics(result.out)["validation"]["confusion_matrix"]
        == (classification_metrics(dataset.y_val, val_errors, bundle.threshold)["confusion_matrix"])
    )


def test_ensemble_needs_at_least_two_seeds(small_real_dir, session_root, tmp_path, capsys):
    study = small_study(small_real_dir, session_root)
    code = main(["retrain", "--study", STUDY, "--storage", study.storage_url, "--ensemble", "--out", str(tmp_path)])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--ensemble averages several seeds: expected --seeds K with K >= 2, got 1" in err


def test_a_diverged_seed_is_left_out_of_the_ensemble(small_real_dir, session_root, tmp_path, monkeypatch, capsys):
    """Seed 1 diverges: a warning, and the one seed left is exported alone (an ensemble of one is one model)."""
    from search.ship import seeds as seeds_module
    from search.training.loop import TrainingDiverged

    real_fit = seeds_module.fit

    def fit_diverging_on_seed_1(model, data, cfg, **kwargs):
        if cfg.seed == 1:
            raise TrainingDiverged(1, 3, "the training loss", cfg.lr)
        return real_fit(model, data, cfg, **kwargs)

    monkeypatch.setattr(seeds_module, "fit", fit_diverging_on_seed_1)
    study = small_study(small_real_dir, session_root)
    out = tmp_path / "bundle"
    args = ["retrain", "--study", STUDY, "--storage", study.storage_url, "--epochs", "1", "--seeds", "2"]
    assert main([*args, "--ensemble", "--out", str(out), "--mlflow-uri", "off", "--device", "cpu"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "warning: seed 1: " in printed and "exported seed 0 to" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["ensemble"] is None and config["seeds"] == [0]
    metrics = _metrics(out)
    assert metrics["exported_seed"] == 0 and [s["seed"] for s in metrics["seeds"]] == [0]
    assert len(metrics["diverged"]) == 1 and metrics["diverged"][0].startswith("seed 1: ")
    assert isinstance(torch.load(out / "model.pt", weights_only=True), dict)
    assert load_bundle(out).ensemble is None


def test_mlflow_outcome_is_told_in_one_line():
    from search.cli.retrain import describe_mlflow

    off = MlflowOutcome(uri=None, run=None, error=None, register_as="ecg")
    assert describe_mlflow(off, Path("b")) == (
        "MLflow off: the bundle was not logged to MLflow and --register-as ecg was ignored"
    )
    failed = MlflowOutcome(uri="http://u:***@h:5000", run=None, error="ConnectionError: [refused]", register_as=None)
    assert describe_mlflow(failed, Path("b")) == (
        # printed with markup off: the store's words come out exactly as written
        "MLflow at http://u:***@h:5000 could not take the model (ConnectionError: [refused]); "
        "the bundle in b is complete"
    )
