"""Study helpers for tests: a definition without real data (override only what a test is about), `start`
arguments, and waiting for a trial in the middle of its training."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from studies import StudyDefinition, open_storage

BASE = StudyDefinition(
    space="cnn",
    data_path="data/mitdb",
    data_fingerprint="ab" * 32,
    n_channels=2,
    seq_len=2000,
    objective="roc_auc",
    direction="maximize",
    epochs=6,
    sampler="tpe",
    pruner="hyperband",
    seed=0,
    max_params=None,
    trials_budget=None,
    ecgsearch_version="0.1.0",
    optuna_version=optuna.__version__,
    torch_version="2.13.0",
)


def make_definition(**changes) -> StudyDefinition:
    """`BASE` with `changes`; `__post_init__` runs again, so e.g. an MLflow URI is stored masked."""
    return dataclasses.replace(BASE, **changes)


def start_args(data: Path, storage: str, *extra: str, mlflow_uri: str | None = "off") -> list[str]:
    """`ecgsearch start` arguments for a test: its data and storage, no progress bar, mirroring off by
    default (`mlflow_uri=None` leaves the flag out, so the default tracking store is used)."""
    mirror = [] if mlflow_uri is None else ["--mlflow-uri", mlflow_uri]
    return ["start", "--data", str(data), "--storage", storage, *mirror, "--no-progress", *extra]


def wait_for_training_trial(
    storage_url: str,
    study_name: str,
    *,
    pid: int | None = None,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
    timeout_s: float = 180,
) -> optuna.trial.FrozenTrial:
    """A RUNNING trial (of worker `pid`, if given) that has finished an epoch, so a signal lands inside training.

    The study may not exist yet when the wait starts. `process` (the command running the workers) must
    not exit meanwhile; `log` is shown when the wait fails.
    """
    deadline = time.monotonic() + timeout_s
    storage = open_storage(storage_url)  # one engine for the whole wait, not a new pool every poll
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"the workers' command exited early with {process.returncode}: {process.communicate()}"
            )
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            study = None
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if study else []:
            if trial.user_attrs.get("epoch", 0) >= 1 and pid in (None, trial.user_attrs.get("worker_pid")):
                return trial
        time.sleep(0.3)
    if process is not None:
        process.kill()
    shown = log.read_text() if log is not None else process.communicate() if process is not None else ""
    raise AssertionError(f"no trial reached epoch 1 within {timeout_s} s:\n{shown}")
