"""The data a trial trains and is judged on: the data's own validation split, or its patient-grouped folds.

Each split is normalised with the statistics of its own training windows (a fold's held-out patients
never shape the scaling it is scored with) and moved to the worker's device once, for every trial.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import optuna
import torch

from search.data import ECGDataset, fold_datasets
from studies import StudyDefinition, read_folds


@dataclass
class TrainingSplits:
    """What every trial of this worker trains on, and (cross-validation) which stored folds made it."""

    splits: list[ECGDataset]
    folds_digest: str | None = None  # sha256 of the stored folds; None without cross-validation


def training_splits(
    dataset: ECGDataset, definition: StudyDefinition, study: optuna.Study, device: torch.device
) -> TrainingSplits:
    """One normalised split on `device` (train/val as given), or one per fold of a cross-validated study."""
    if not definition.cv_folds:
        return TrainingSplits([dataset.normalised()[0].to(device)])
    folds = read_folds(study)
    splits = [fold.normalised()[0].to(device) for fold in fold_datasets(dataset, folds)]
    return TrainingSplits(splits, folds_digest(folds))


def folds_digest(folds: list[int]) -> str:
    """A short identity of a fold assignment: workers record it on their trials, so it shows they all used one."""
    return hashlib.sha256(json.dumps(folds).encode()).hexdigest()[:16]
