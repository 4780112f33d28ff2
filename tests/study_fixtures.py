"""A study definition for tests that need one without real data: override only what a test is about."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna

from studies import StudyDefinition

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
