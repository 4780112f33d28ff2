"""Patient-grouped cross-validation folds: one fold per patient, both classes per fold, deterministic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from search.data import DataError, ECGDataset, dataset_folds, fold_datasets, load_dataset, patient_folds


def pooled_labels(n_patients: int = 12, windows: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and patient ids: each patient's share of label 1 differs, every patient has both classes."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients) * 7 + 3, windows)  # ids need not be 0..n-1
    shares = rng.uniform(0.2, 0.8, n_patients)
    labels = np.concatenate([np.arange(windows) < max(1, round(s * windows)) for s in shares]).astype(np.float32)
    return labels, groups


def make_dataset(n_per_patient: int = 6) -> ECGDataset:
    """Train: 4 patients, val: 2, test: 2; X[i, 0, 0] numbers the pooled train+val rows."""
    arrays: dict[str, torch.Tensor] = {}
    patients = {"train": [1, 2, 3, 4], "val": [5, 6], "test": [7, 8]}
    offset = 0
    for split, ids in patients.items():
        n = n_per_patient * len(ids)
        X = torch.zeros(n, 2, 8)
        X[:, 0, 0] = torch.arange(offset, offset + n, dtype=torch.float32)
        offset += n if split != "test" else 0
        arrays[f"X_{split}"], arrays[f"y_{split}"] = X, (torch.arange(n) % 3 == 0).float()
        arrays[f"groups_{split}"] = torch.tensor(ids).repeat_interleave(n_per_patient)
    return ECGDataset.from_arrays(arrays, source="unit", meta={"fs": 100, "prepare": {"x": 1}})


def test_every_patient_is_in_one_fold_and_every_fold_has_both_classes() -> None:
    labels, groups = pooled_labels()
    folds = patient_folds(labels, groups, k=4, seed=0)
    assert folds.shape == labels.shape and folds.dtype == np.int64 and set(folds.tolist()) == {0, 1, 2, 3}
    for patient in np.unique(groups):
        assert len(set(folds[groups == patient].tolist())) == 1
    for fold in range(4):
        assert set(labels[folds == fold].tolist()) == {0.0, 1.0}
        assert len(np.unique(groups[folds == fold])) == 3  # 12 patients of equal size, 4 folds


def test_same_inputs_same_folds_in_any_process_and_other_seed_other_folds() -> None:
    labels, groups = pooled_labels()
    first = patient_folds(torch.from_numpy(labels), torch.from_numpy(groups), k=3, seed=5)
    assert np.array_equal(first, patient_folds(labels, groups, k=3, seed=5))
    code = (
        "import json, sys, numpy as np; from search.data import patient_folds; "
        "y, g = (np.array(v) for v in json.loads(sys.argv[1])); "
        "print(json.dumps(patient_folds(y, g, k=3, seed=5).tolist()))"
    )
    argument = json.dumps([labels.tolist(), groups.tolist()])
    there = subprocess.run([sys.executable, "-c", code, argument], capture_output=True, text=True, check=True)
    assert json.loads(there.stdout) == first.tolist()
    assert any(not np.array_equal(first, patient_folds(labels, groups, k=3, seed=s)) for s in range(6, 10))


def test_without_group_ids_each_window_is_its_own_patient() -> None:
    labels, _ = pooled_labels()
    folds = patient_folds(labels, None, k=5, seed=0)
    assert np.bincount(folds).tolist() == [24] * 5
    positives = [int(labels[folds == fold].sum()) for fold in range(5)]
    assert max(positives) - min(positives) <= 1  # stratified window by window
    assert np.array_equal(folds, patient_folds(labels, np.arange(len(labels)), k=5, seed=0))


def test_too_many_folds_for_the_patients_says_which_k_works() -> None:
    labels, groups = pooled_labels(n_patients=4)
    with pytest.raises(DataError) as caught:
        patient_folds(labels, groups, k=5, seed=0, source="data/x")
    message = str(caught.value)
    assert message.startswith("data/x [groups]: 4 patients") and "k=5" in message and "k=4 is the largest" in message
    # Only two patients have windows labelled 1: no fold split beyond 2 can give each fold one.
    labels = np.where(np.isin(groups, np.unique(groups)[:2]), labels, 0.0)
    with pytest.raises(DataError, match=r"2 with windows labelled 1.*k=2 is the largest"):
        patient_folds(labels, groups, k=3, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        patient_folds(labels, groups, k=1, seed=0)
    with pytest.raises(ValueError, match="one per window"):
        patient_folds(labels, groups[:-1], k=2, seed=0)


def test_fold_datasets_split_the_pooled_train_and_val_and_leave_test_alone() -> None:
    data = make_dataset()
    folds = dataset_folds(data, k=3, seed=0)
    assert len(folds) == len(data.y_train) + len(data.y_val)
    views = fold_datasets(data, folds)
    assert len(views) == 3
    seen_val_rows: list[int] = []
    for fold, view in enumerate(views):
        train_rows, val_rows = view.X_train[:, 0, 0].long(), view.X_val[:, 0, 0].long()
        assert torch.equal(torch.sort(val_rows).values, torch.from_numpy(np.flatnonzero(folds == fold)))
        assert len(train_rows) + len(val_rows) == len(folds)
        assert not set(view.groups_train.tolist()) & set(view.groups_val.tolist())
        assert set(view.y_val.tolist()) == {0.0, 1.0}
        assert view.X_test is data.X_test and view.groups_test is data.groups_test
        assert view.fs == 100 and view.meta["fold"] == {"index": fold, "k": 3} and "prepare" not in view.meta
        assert view.meta["counts"]["val"]["windows"] == len(val_rows)
        seen_val_rows += val_rows.tolist()
    assert sorted(seen_val_rows) == list(range(len(folds)))
    with pytest.raises(ValueError, match="one each"):
        fold_datasets(data, folds[:-1])
    with pytest.raises(ValueError, match="expected every fold 0 … 3 to hold windows"):
        fold_datasets(data, np.where(folds == 1, 3, folds))


@pytest.mark.mitdb
def test_mitdb_train_and_val_folds_keep_each_record_whole(mitdb_prepared_dir: Path) -> None:
    data = load_dataset(mitdb_prepared_dir)
    folds = dataset_folds(data, k=5, seed=0)
    groups = torch.cat([data.groups_train, data.groups_val]).numpy()
    labels = torch.cat([data.y_train, data.y_val]).numpy()
    assert len(np.unique(groups)) == 22  # the DS1 records, each its own patient
    for patient in np.unique(groups):
        assert len(set(folds[groups == patient].tolist())) == 1
    shares = [float(labels[folds == fold].mean()) for fold in range(5)]
    assert all(0.3 < share < 0.8 for share in shares)  # both classes, near the pooled 55 %
    assert np.array_equal(folds, dataset_folds(data, k=5, seed=0))
