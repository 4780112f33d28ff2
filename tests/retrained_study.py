"""A small real study, its retrained bundles and the session folder they live in, shared by
test_retrain.py, test_export.py and test_predict.py.

The study is what a worker leaves behind: a definition in the study's user attributes and trials
trained for real (tiny models, small MIT-BIH slice) with their flat config in user attr `config`.
`small_study`, `retrained` and `ensemble_bundle` are cached per test session so the three modules
reuse the same study and bundles instead of training again.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

import ecgmodels
import search
from search.cli import main
from search.data import load_dataset
from search.ship.retrain import RetrainResult, RetrainSettings, retrain
from search.ship.seeds import RetrainEvent
from search.training.config import TrainConfig, join_config
from search.training.device import seed_everything
from search.training.loop import fit
from studies import StudyDefinition, create_or_load_study, open_storage
from study_fixtures import make_definition

STUDY = "retrain-small"
EMPTY_STUDY = "retrain-nothing-done"
REGISTERED_NAME = "ecg-retrain-test"

TINY_CNN = {
    "out_channels": [4, 8],
    "kernel_sizes": [7, 5],
    "pool_sizes": [4, 4],
    "batch_norm": True,
    "activation": "relu",
    "conv_dropout": 0.0,
    "head": "avg",
    "fc_units": [8],
    "fc_dropout": 0.0,
}
TINY_CNN_AE = {
    "out_channels": [4, 8],
    "kernel_sizes": [5, 3],
    "pool_sizes": [4, 2],
    "batch_norm": True,
    "activation": "relu",
    "conv_dropout": 0.0,
    "latent_channels": 4,
}
SEARCH_EPOCHS = 1
STUDY_EPOCHS = 2


@dataclass(frozen=True)
class SmallStudy:
    storage_url: str
    data_dir: Path
    mlflow_uri: str
    experiment_id: str
    parent_run_id: str
    best_number: int
    ae_number: int
    pruned_number: int


def _flat_config(family: str, model_params: dict, *, lr: float, seed: int = 0) -> dict:
    train = TrainConfig(epochs=SEARCH_EPOCHS, batch_size=32, lr=lr, grad_clip=1.0, objective="roc_auc", seed=seed)
    return join_config(family, model_params, train)


def _train_trial(study: optuna.Study, data, config: dict, state: TrialState = TrialState.COMPLETE) -> int:
    """Train `config` for real, then record it as the trial a worker would have left."""
    from search.training.config import split_config

    family, params, cfg = split_config(config)
    seed_everything(cfg.seed)
    model = ecgmodels.build(family, n_channels=data.n_channels, seq_len=data.seq_len, **params)
    fitted = fit(model, data, cfg, autoencoder=ecgmodels.is_autoencoder(family), device="cpu")
    distributions = {
        "family": CategoricalDistribution(list(ecgmodels.FAMILIES)),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
    }
    values = [h["val_" + cfg.objective] for h in fitted.history]
    trial = optuna.trial.create_trial(
        params={"family": family, "lr": cfg.lr},
        distributions=distributions,
        value=fitted.best_value if state == TrialState.COMPLETE else None,
        intermediate_values=dict(enumerate(values, start=1)),
        state=state,
        user_attrs={"config": config, "family": family, "n_params": ecgmodels.count_params(model)},
    )
    study.add_trial(trial)
    return study.trials[-1].number


def _definition(data_dir: Path, fingerprint: str, data, **mlflow_ids) -> StudyDefinition:
    return make_definition(
        space="all",
        data_path=str(data_dir),
        data_fingerprint=fingerprint,
        n_channels=data.n_channels,
        seq_len=data.seq_len,
        epochs=STUDY_EPOCHS,
        sampler="random",
        pruner="none",
        ecgsearch_version=search.__version__,
        torch_version=torch.__version__,
        **mlflow_ids,
    )


@functools.cache
def small_study(data_dir: Path, root: Path) -> SmallStudy:
    """A study with a COMPLETE cnn trial, a COMPLETE cnn_ae trial and a PRUNED one, plus an empty study,
    and the MLflow experiment + parent run `ecgsearch start` would have created."""
    import mlflow

    root.mkdir(parents=True, exist_ok=True)
    storage_url = f"sqlite:///{root / 'study.db'}"
    mlflow_uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment(STUDY, artifact_location=str(root / "mlartifacts"))
    parent_run_id = client.create_run(experiment_id, run_name=STUDY).info.run_id

    dataset = load_dataset(data_dir)
    data, _ = dataset.normalised()
    storage = open_storage(storage_url)
    definition = _definition(
        data_dir,
        dataset.fingerprint(),
        dataset,
        mlflow_tracking_uri=mlflow_uri,
        mlflow_experiment_id=experiment_id,
        mlflow_parent_run_id=parent_run_id,
    )
    study, _, created = create_or_load_study(storage, STUDY, definition)
    assert created
    cnn = _train_trial(study, data, _flat_config("cnn", TINY_CNN, lr=3e-3))
    ae = _train_trial(study, data, _flat_config("cnn_ae", TINY_CNN_AE, lr=3e-3))
    pruned = _train_trial(study, data, _flat_config("cnn", TINY_CNN, lr=1e-4), TrialState.PRUNED)
    empty, _, _ = create_or_load_study(storage, EMPTY_STUDY, definition)
    _train_trial(empty, data, _flat_config("cnn", TINY_CNN, lr=1e-4), TrialState.PRUNED)
    best = study.best_trial.number
    assert best in (cnn, ae)
    return SmallStudy(storage_url, data_dir, mlflow_uri, experiment_id, parent_run_id, best, ae, pruned)


# Progress events each cached retrain sent, by kind.
EVENTS: dict[str, list[RetrainEvent]] = {}


@functools.cache
def retrained(data_dir: Path, root: Path, kind: str) -> tuple[SmallStudy, RetrainResult]:
    """kind 'best': best trial, 1 seed, logged to MLflow and registered; 'ae': the cnn_ae trial, 1 seed,
    MLflow off; 'seeds': best trial, 2 seeds, MLflow off; 'ae-ensemble': the cnn_ae trial, 2 seeds
    exported as their ensemble, MLflow off."""
    study = small_study(data_dir, root)
    settings = RetrainSettings(STUDY, storage=study.storage_url, epochs=STUDY_EPOCHS, out=root / f"bundle-{kind}")
    if kind == "best":
        settings = replace(settings, mlflow_uri=study.mlflow_uri, register_as=REGISTERED_NAME)
    elif kind == "ae":
        settings = replace(settings, trial_number=study.ae_number, mlflow_uri="off")
    elif kind == "seeds":
        settings = replace(settings, seeds=2, mlflow_uri="off", register_as="ignored-when-off")
    elif kind == "ae-ensemble":
        settings = replace(settings, trial_number=study.ae_number, seeds=2, ensemble=True, mlflow_uri="off")
    else:
        raise ValueError(kind)
    EVENTS[kind] = []
    return study, retrain(settings, on_progress=EVENTS[kind].append)


@functools.cache
def ensemble_bundle(data_dir: Path, root: Path) -> tuple[Path, str]:
    """`ecgsearch retrain --seeds 2 --ensemble` of the best trial (MLflow off): the bundle and what it printed."""
    study = small_study(data_dir, root)
    out = root / "bundle-ensemble"
    args = ["retrain", "--study", STUDY, "--storage", study.storage_url, "--epochs", str(STUDY_EPOCHS)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main([*args, "--seeds", "2", "--ensemble", "--out", str(out), "--mlflow-uri", "off", "--device", "cpu"])
    assert code == 0
    return out, printed.getvalue()


def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder per test session for the cached study and bundles (same path from every module)."""
    return tmp_path_factory.getbasetemp() / "retrain-shared"


def member_scores(bundle_dir: Path, X: torch.Tensor) -> list[np.ndarray]:
    """Each seed's own scores, from model.pt's state_dicts and ecgmodels alone (no ensemble code)."""
    from search.training.scoring import score_windows

    config = json.loads((bundle_dir / "config.json").read_text())
    states = torch.load(bundle_dir / "model.pt", weights_only=True)
    assert isinstance(states, list) and len(states) == config["ensemble"]
    scores = []
    for state in states:
        model = ecgmodels.build(
            config["family"], n_channels=config["n_channels"], seq_len=config["window_length"], **config["model_params"]
        )
        model.load_state_dict(state)
        scores.append(score_windows(model.eval(), X, autoencoder=config["autoencoder"]))
    return scores
