"""`start --cv K`: patient-grouped folds stored with the study, K models per trial in lockstep, the trial
valued by the selection rule on the mean curve, per-fold values recorded; retraining exports the fold
models (or refits on all of train+val) for the epochs cross-validation chose; two workers on PostgreSQL
use the same folds."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from search.cli import main
from search.data import load_dataset
from search.optimize.splits import folds_digest, training_splits
from search.ship.bundle import load_bundle
from search.training.curve import curve_value
from studies import FINISHED_STATES, is_infeasible, open_storage, read_definition, read_folds

# Small models and few epochs: K = 3 models per trial on a 96 + 48 window slice.
SMALL = ("--space", "cnn", "--epochs", "3", "--pruner", "none", "--max-params", "30000", "--sampler", "random")


def _pooled_groups(data_dir: Path) -> np.ndarray:
    dataset = load_dataset(data_dir)
    return np.concatenate([dataset.groups_train.numpy(), dataset.groups_val.numpy()])


@pytest.fixture(scope="module")
def cv_study(small_real_dir, tmp_path_factory, start_args):
    """A 3-fold cross-validated study of 2 trials on the small real slice (patient ids from MIT-BIH)."""
    root = tmp_path_factory.mktemp("cv")
    storage = f"sqlite:///{root / 'cv.db'}"
    argv = start_args(small_real_dir, storage, *SMALL, "--study", "cv", "--trials", "2", "--cv", "3")
    assert main(argv) == 0
    return storage, optuna.load_study(study_name="cv", storage=storage), root


def test_every_patient_is_in_one_fold_and_the_folds_are_stored(cv_study, small_real_dir):
    _, study, _ = cv_study
    definition = read_definition(study)
    assert definition.cv_folds == 3 and definition.selection == "smoothed"
    folds = np.asarray(read_folds(study))
    groups = _pooled_groups(small_real_dir)
    assert len(folds) == len(groups) and set(folds.tolist()) == {0, 1, 2}
    for patient in np.unique(groups):
        assert len(set(folds[groups == patient].tolist())) == 1, f"patient {patient} is in several folds"


def test_a_trial_is_valued_by_the_rule_on_the_mean_of_its_folds(cv_study):
    _, study, _ = cv_study
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert complete, [t.user_attrs.get("fail_reason") for t in study.trials]
    for trial in complete:
        history = trial.user_attrs["history"]
        assert len(history) == 3
        for entry in history:
            folds = [entry[f"fold{k}_val_roc_auc"] for k in (1, 2, 3)]
            assert entry["val_roc_auc"] == pytest.approx(sum(folds) / 3)
        value, epoch = curve_value([e["val_roc_auc"] for e in history], "smoothed", 3)
        assert trial.value == pytest.approx(value) and trial.user_attrs["cv_epoch"] == epoch
        assert len(trial.user_attrs["cv_fold_values"]) == 3
        assert all(0.0 <= v <= 1.0 for v in trial.user_attrs["cv_fold_values"] if not math.isnan(v))
        # Each held-out window is counted once: the summed confusion matrix covers all of train+val.
        assert sum(map(sum, trial.user_attrs["val_confusion_matrix"])) == len(read_folds(study))
        assert trial.user_attrs["cv_folds_digest"] == folds_digest(read_folds(study))


def test_retrain_ensemble_refits_on_all_of_train_and_val_and_predict_reproduces_it(cv_study, small_real_dir, tmp_path):
    storage, study, _ = cv_study
    out = tmp_path / "bundle"
    # --ensemble averages a refit's seeds, so under --cv it refits rather than exporting the fold models.
    argv = ["retrain", "--study", "cv", "--storage", storage, "--mlflow-uri", "off", "--seeds", "2", "--ensemble"]
    assert main([*argv, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    best = study.best_trial
    assert metrics["ensemble_folds"] is None and [m["fold"] for m in metrics["seeds"]] == [None, None]
    assert metrics["cross_validation"]["folds"] == 3
    assert metrics["epochs"] == metrics["cross_validation"]["epochs"] == best.user_attrs["cv_epoch"]
    assert metrics["validation"] == {}  # nothing was held out: the CV estimate stands in for it
    assert all(seed["epochs_run"] == metrics["epochs"] for seed in metrics["seeds"])
    scores = _predicted(out, load_dataset(small_real_dir), tmp_path)
    assert np.max(np.abs(scores["torch"] - scores["onnx"])) < 1e-4


def test_refit_trains_one_model_on_every_training_patient(cv_study, small_real_dir, tmp_path, capsys):
    storage, study, _ = cv_study
    out = tmp_path / "refit"
    argv = ["retrain", "--study", "cv", "--storage", storage, "--mlflow-uri", "off", "--refit", "--out", str(out)]
    assert main(argv) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "on all of train+val for the" in printed and "fold 1" not in printed
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    best = study.best_trial
    assert metrics["ensemble_folds"] is None and metrics["exported_seed"] == best.user_attrs["config"]["seed"]
    assert config["folds"] is None and len(metrics["seeds"]) == 1 and metrics["validation"] == {}
    assert metrics["seeds"][0]["epochs_run"] == best.user_attrs["cv_epoch"]
    # Trained on every labelled window: the weights equal one seed trained on pooled train+val.
    from search.data import all_labelled
    from search.ship.seeds import train_seeds
    from search.training.config import split_config

    dataset = load_dataset(small_real_dir)
    pooled, _ = all_labelled(dataset).normalised()
    family, params, cfg = split_config(best.user_attrs["config"])
    cfg = replace(cfg, epochs=best.user_attrs["cv_epoch"], patience=0, selection="last")
    (trained,), _ = train_seeds(family, params, cfg, pooled, seeds=1, device=torch.device("cpu"), fs=dataset.fs)
    state = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(state[key], trained.state[key]) for key in trained.state)


def _predicted(bundle: Path, dataset, folder: Path, n: int = 16) -> dict[str, np.ndarray]:
    """`ecgsearch predict` scores of the first `n` test windows, through PyTorch and through ONNX Runtime."""
    windows, groups = folder / "windows.npy", folder / "groups.npy"
    np.save(windows, dataset.X_test.numpy()[:n])
    np.save(groups, dataset.groups_test.numpy()[:n])  # used when the search picked record-relative timing
    scores = {}
    for runtime in ("torch", "onnx"):
        csv = folder / f"{runtime}.csv"
        args = ["predict", "--model", str(bundle), "--input", str(windows), "--groups", str(groups)]
        assert main([*args, "--out", str(csv), "--runtime", runtime]) == 0
        scores[runtime] = np.loadtxt(csv, delimiter=",", skiprows=1, usecols=1)
    return scores


def test_a_resumed_cross_validated_study_keeps_its_setting_without_the_flag(cv_study, small_real_dir, start_args):
    storage, _, _ = cv_study
    assert main(start_args(small_real_dir, storage, *SMALL, "--study", "cv", "--trials", "2")) == 0
    assert read_definition(optuna.load_study(study_name="cv", storage=storage)).cv_folds == 3


def test_cv_of_one_fold_is_refused_before_anything_is_written(small_real_dir, tmp_path, capsys, start_args):
    database = tmp_path / "refused.db"
    assert main(start_args(small_real_dir, f"sqlite:///{database}", *SMALL, "--cv", "1")) == 2
    assert "--cv" in capsys.readouterr().err and not database.exists()


@pytest.mark.postgres
def test_two_workers_on_postgres_use_the_stored_folds(small_real_dir, postgres_url, tmp_path, start_args):
    created = start_args(small_real_dir, postgres_url, *SMALL, "--study", "shared-cv", "--trials", "2", "--cv", "3")
    assert main([*created, "--create-only"]) == 0
    env = {**os.environ, "ECGSEARCH_STORAGE": postgres_url, "ECGSEARCH_THREADS": "1"}
    worker = [sys.executable, "-m", "search.cli", "worker", "--study", "shared-cv", "--mlflow-uri", "off"]
    processes = [subprocess.Popen([*worker, "--no-progress"], env=env, cwd=tmp_path) for _ in range(2)]
    assert [process.wait(timeout=900) for process in processes] == [0, 0]
    study = optuna.load_study(study_name="shared-cv", storage=open_storage(postgres_url))
    digest = folds_digest(read_folds(study))
    trained = [
        t
        for t in study.get_trials(states=FINISHED_STATES)
        if "cv_folds_digest" in t.user_attrs and not is_infeasible(t)
    ]
    assert len(trained) == 2 and {t.user_attrs["cv_folds_digest"] for t in trained} == {digest}
    # Whichever process trains, it builds the same folds from the database: two fresh openings of the
    # study (two workers' views) give identical training and held-out windows, fold by fold.
    dataset = load_dataset(small_real_dir)
    views = []
    for _ in range(2):
        opened = optuna.load_study(study_name="shared-cv", storage=open_storage(postgres_url))
        views.append(training_splits(dataset, read_definition(opened), opened, torch.device("cpu")))
    assert views[0].folds_digest == views[1].folds_digest == digest
    for first, second in zip(views[0].splits, views[1].splits, strict=True):
        assert torch.equal(first.X_val, second.X_val) and torch.equal(first.y_train, second.y_train)


def test_a_cross_validated_study_exports_its_fold_models_by_default_and_predict_reproduces_them(
    cv_study, small_real_dir, tmp_path, capsys
):
    storage, study, _ = cv_study
    out = tmp_path / "folds"
    argv = ["retrain", "--study", "cv", "--storage", storage, "--mlflow-uri", "off"]  # no flag: the fold models
    assert main([*argv, "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "once per fold of its 3-fold cross-validation" in printed and "fold 3 · seed" in printed
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    best = study.best_trial
    seed = best.user_attrs["config"]["seed"]
    assert config["ensemble"] == 3 and config["folds"] == [0, 1, 2] and config["seeds"] == [seed, seed + 1, seed + 2]
    assert metrics["ensemble_folds"] == [0, 1, 2] and [m["fold"] for m in metrics["seeds"]] == [0, 1, 2]
    assert all(m["epochs_run"] == best.user_attrs["cv_epoch"] for m in metrics["seeds"])
    assert "one per cross-validation fold" in (out / "README.md").read_text()

    # Member k is validated on the windows of fold k and trained on the others: the same weights as a
    # seed trained on that fold's view of the pooled, normalised train+val.
    from search.data import all_labelled, fold_datasets
    from search.ship.seeds import train_seeds
    from search.training.config import split_config

    dataset = load_dataset(small_real_dir)
    folds = np.asarray(read_folds(study))
    pooled, _ = all_labelled(dataset).normalised()
    family, params, cfg = split_config(best.user_attrs["config"])
    cfg = replace(cfg, epochs=best.user_attrs["cv_epoch"], patience=0, selection="last")
    states = torch.load(out / "model.pt", weights_only=True)
    for fold, view in enumerate(fold_datasets(pooled, folds)):
        member = metrics["seeds"][fold]
        assert sum(map(sum, member["validation"]["confusion_matrix"])) == int((folds == fold).sum())
        if fold == 1:
            (trained,), _ = train_seeds(
                family, params, replace(cfg, seed=seed + fold), view, seeds=1, device=torch.device("cpu"), fs=dataset.fs
            )
            assert all(torch.equal(states[fold][key], trained.state[key]) for key in trained.state)

    scores = _predicted(out, dataset, tmp_path)
    assert np.max(np.abs(scores["torch"] - scores["onnx"])) < 1e-4
    # The score is the mean of the members' scores.
    bundle = load_bundle(out)
    X, record_rr = bundle.model_inputs(dataset.X_test[:16], groups=dataset.groups_test[:16])
    members = [member(X, record_rr).detach().numpy() for member in bundle.scorer.members]
    np.testing.assert_allclose(scores["torch"], np.mean(members, axis=0), rtol=1e-5, atol=1e-6)


def test_fold_ensemble_is_refused_where_it_cannot_mean_anything(cv_study, small_real_dir, tmp_path, capsys, start_args):
    storage, _, _ = cv_study
    both = ["retrain", "--study", "cv", "--storage", storage, "--mlflow-uri", "off", "--fold-ensemble", "--ensemble"]
    assert main([*both, "--seeds", "2", "--out", str(tmp_path / "both")]) == 2
    assert "not both" in capsys.readouterr().err and not (tmp_path / "both").exists()
    refit = ["retrain", "--study", "cv", "--storage", storage, "--mlflow-uri", "off", "--fold-ensemble", "--refit"]
    assert main([*refit, "--out", str(tmp_path / "refit")]) == 2
    assert "--refit" in capsys.readouterr().err and not (tmp_path / "refit").exists()
    plain = tmp_path / "plain.db"
    assert main([*start_args(small_real_dir, f"sqlite:///{plain}", *SMALL, "--study", "plain"), "--create-only"]) == 0
    code = main(["retrain", "--study", "plain", "--storage", f"sqlite:///{plain}", "--fold-ensemble"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "study 'plain' is not cross-validated" in err


def test_retrain_exports_the_starting_point_the_best_trial_did_not_beat_beyond_noise(
    cv_study, small_real_dir, tmp_path, capsys
):
    import sqlite3

    from studies import STARTING_POINT_ATTR, paired_lead_t

    *_, root = cv_study
    copy = tmp_path / "cv.db"  # the module's study stays as the other tests expect it
    with sqlite3.connect(root / "cv.db") as source, sqlite3.connect(copy) as target:
        source.backup(target)  # the write-ahead log included, which a file copy would miss
    copied = optuna.load_study(study_name="cv", storage=f"sqlite:///{copy}")
    starting = [
        t for t in copied.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) if STARTING_POINT_ATTR in t.user_attrs
    ]
    incumbent = max(starting, key=lambda t: t.number)  # the one the space lists last: the rhythm branch
    donor = min(starting, key=lambda t: t.number)  # a real config for the challenger to retrain
    # A challenger above every trial on the mean, behind the incumbent on one fold: a lead the folds cannot confirm.
    spread = [0.06, -0.04, 0.07]
    folds = [v + d for v, d in zip(incumbent.user_attrs["cv_fold_values"], spread, strict=True)]
    attrs = {k: v for k, v in donor.user_attrs.items() if k != STARTING_POINT_ATTR}
    copied.add_trial(
        optuna.trial.create_trial(
            value=incumbent.value + 0.03,
            params=donor.params,
            distributions=donor.distributions,
            user_attrs={**attrs, "cv_fold_values": folds},
        )
    )
    challenger = copied.trials[-1].number
    argv = ["retrain", "--study", "cv", "--storage", f"sqlite:///{copy}", "--mlflow-uri", "off", "--refit"]
    assert main([*argv, "--out", str(tmp_path / "confirmed")]) == 0  # the default rule: confirmed
    printed = " ".join(capsys.readouterr().out.split())
    metrics = json.loads((tmp_path / "confirmed" / "metrics.json").read_text())
    assert metrics["trial_number"] == incumbent.number
    t = paired_lead_t(folds, incumbent.user_attrs["cv_fold_values"])
    assert f"is {t:.2f} standard errors" in metrics["selection"] and "not confirmed" in metrics["selection"]
    assert f"Why this trial: {metrics['selection']}." in (tmp_path / "confirmed" / "README.md").read_text()
    assert f"retraining trial {incumbent.number} " in printed and "chosen by --select confirmed" in printed

    assert main([*argv, "--select", "best", "--out", str(tmp_path / "best")]) == 0
    assert json.loads((tmp_path / "best" / "metrics.json").read_text())["trial_number"] == challenger
    # --select chooses the trial, so it and --trial N are refused together before anything is written.
    assert main([*argv, "--select", "best", "--trial", "0", "--out", str(tmp_path / "both")]) == 2
    assert "not two of them" in capsys.readouterr().err and not (tmp_path / "both").exists()
