"""A study definition for tests that need one without real data: override only what a test is about."""

from __future__ import annotations

import dataclasses

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
