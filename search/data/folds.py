"""Patient-grouped cross-validation folds over the pooled training and validation windows.

A model selected on windows of patients it was trained on learns the patients, not the rhythm. The
folds here keep every patient in exactly one fold (scikit-learn's StratifiedGroupKFold, which also
keeps the class balance of each fold near the pool's), so each fold's validation windows come from
patients the fold's model never saw. The test split is never pooled: it is read once, to report.

Without group ids every window is its own patient; callers warn that the folds then leak patients.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from search.data.dataset import ECGDataset, split_counts
from search.data.errors import DataError

POOLED_SPLITS = ("train", "val")


def patient_folds(
    y: np.ndarray | torch.Tensor,
    groups: np.ndarray | torch.Tensor | None,
    k: int,
    seed: int,
    *,
    source: str = "<arrays>",
) -> np.ndarray:
    """The fold (0 … k-1) of each window: every patient in one fold, both classes in every fold.

    The same `y`, `groups`, `k` and `seed` give the same folds in any process. `groups` None: each
    window is its own patient. A `k` the patients cannot fill is a `DataError` (on `source`) saying
    which `k` would work.
    """
    if k < 2:
        raise ValueError(f"k={k} folds: expected at least 2")
    labels = _as_numpy(y).astype(np.int64)
    ids = np.arange(len(labels)) if groups is None else _as_numpy(groups).astype(np.int64)
    if ids.shape != labels.shape:
        raise ValueError(f"{len(ids)} group ids for {len(labels)} labels; expected one per window")
    folds = _split(labels, ids, k, seed) if k <= _most_folds_possible(labels, ids) else None
    if folds is None or _folds_lacking_a_class(labels, folds, k):
        raise DataError(
            source,
            "groups" if groups is not None else "y",
            f"{_describe(labels, ids)}: k={k} folds (seed {seed}) cannot each hold windows of both classes; "
            f"{_possible_k(labels, ids, k, seed)}",
        )
    return folds


def _possible_k(labels: np.ndarray, ids: np.ndarray, k: int, seed: int) -> str:
    """What to ask for instead: the largest k below `k` whose folds (with `seed`) all hold both classes."""
    largest = min(k - 1, _most_folds_possible(labels, ids))
    for fewer in range(largest, 1, -1):
        if not _folds_lacking_a_class(labels, _split(labels, ids, fewer, seed), fewer):
            return f"expected a smaller k: k={fewer} is the largest that does (with seed {seed})"
    return "expected patients with windows of each class in at least 2 folds"


def dataset_folds(data: ECGDataset, k: int, seed: int) -> np.ndarray:
    """`patient_folds` over the pooled train+val windows of `data` (train first, then val)."""
    y = torch.cat([data.split(split)[1] for split in POOLED_SPLITS])
    groups = torch.cat([data.groups(split) for split in POOLED_SPLITS]) if data.has_groups else None
    return patient_folds(y, groups, k, seed, source=data.source)


def fold_datasets(data: ECGDataset, folds: np.ndarray | torch.Tensor) -> list[ECGDataset]:
    """One dataset per fold: validation = the pooled train+val windows of that fold, training = the
    others (in pooled order), test untouched (the same tensors). Indexing happens on `data`'s device;
    each fold holds its own copy of the pooled windows, so k folds take k times train+val in memory."""
    pooled = _pooled(data)
    fold_of = torch.as_tensor(_as_numpy(folds), dtype=torch.int64, device=data.device)
    if len(fold_of) != len(pooled["y"]):
        raise ValueError(f"{len(fold_of)} fold indices for {len(pooled['y'])} train+val windows; expected one each")
    k = int(fold_of.max()) + 1
    if int(fold_of.min()) < 0 or bool((torch.bincount(fold_of, minlength=k) == 0).any()):
        raise ValueError(
            f"fold indices {sorted(set(fold_of.tolist()))}; expected every fold 0 … {k - 1} to hold windows"
        )
    views = []
    for fold in range(k):
        held_out = fold_of == fold
        tensors = {}
        for kind, pool in pooled.items():
            tensors[f"{kind}_train"], tensors[f"{kind}_val"] = pool[~held_out], pool[held_out]
        view = _with_test(data, tensors, f"{data.source} (fold {fold + 1} of {k})")
        view.meta["fold"] = {"index": fold, "k": k}
        views.append(view)
    return views


def all_labelled(data: ECGDataset) -> ECGDataset:
    """Every labelled window for training (train then val, pooled), no validation window, test untouched:
    the final fit after cross-validation chose a configuration and its epochs."""
    tensors = {}
    for kind, pool in _pooled(data).items():
        tensors[f"{kind}_train"], tensors[f"{kind}_val"] = pool, pool[:0]
    return _with_test(data, tensors, f"{data.source} (train+val pooled)")


def _pooled(data: ECGDataset) -> dict[str, torch.Tensor]:
    """X, y (and groups) of the train and val splits concatenated, train first."""
    kinds = ("X", "y", *(("groups",) if data.has_groups else ()))
    return {kind: torch.cat([getattr(data, f"{kind}_{split}") for split in POOLED_SPLITS]) for kind in kinds}


def _with_test(data: ECGDataset, tensors: dict[str, torch.Tensor], source: str) -> ECGDataset:
    """A dataset of the given train/val tensors and `data`'s own test split and meta (counts updated)."""
    view = ECGDataset(
        **tensors,
        X_test=data.X_test,
        y_test=data.y_test,
        groups_test=data.groups_test,
        source=source,
        meta={key: value for key, value in copy.deepcopy(data.meta).items() if key not in ("prepare", "files")},
    )
    view.meta["counts"] = split_counts(view)
    return view


def _split(labels: np.ndarray, ids: np.ndarray, k: int, seed: int) -> np.ndarray:
    # scikit-learn (and the pandas it loads) only when folds are made: it doubles `import search.data`.
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    # When every window is its own group (no group ids), StratifiedKFold is the same split rule
    # without StratifiedGroupKFold's per-group Python loop (seconds on tens of thousands of windows).
    if len(np.unique(ids)) == len(ids):
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    else:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels, ids)
    folds = np.empty(len(labels), dtype=np.int64)
    for fold, (_, held_out) in enumerate(splits):
        folds[held_out] = fold
    return folds


def _most_folds_possible(labels: np.ndarray, ids: np.ndarray) -> int:
    """Folds need a patient with a window of each class: at most that many patients of either kind."""
    with_positive = len(np.unique(ids[labels == 1]))
    with_negative = len(np.unique(ids[labels != 1]))
    return min(with_positive, with_negative, len(np.unique(ids)))


def _folds_lacking_a_class(labels: np.ndarray, folds: np.ndarray, k: int) -> list[int]:
    return [fold for fold in range(k) if len(np.unique(labels[folds == fold])) < 2]


def _describe(labels: np.ndarray, ids: np.ndarray) -> str:
    return (
        f"{len(np.unique(ids))} patients ({len(np.unique(ids[labels == 1]))} with windows labelled 1, "
        f"{len(np.unique(ids[labels != 1]))} with windows labelled 0) in {len(labels)} train+val windows"
    )


def _as_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
