"""The in-memory dataset every other package works with, and the per-lead normalisation statistics."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.data.errors import DataError
from search.data.store import write_layout
from search.data.validation import (
    FIELDS,
    GROUP_FIELDS,
    SPLITS,
    present_group_fields,
    sampling_rate,
    validate_arrays,
    validate_groups,
)

__all__ = ["ASSUMED_WINDOW_S", "FIELDS", "GROUP_FIELDS", "SPLITS", "ECGDataset", "NormStats", "split_counts"]

STD_FLOOR = 1e-6
# Where meta.json gives no sampling rate, a window is taken to last this long (fs = samples / 10 s):
# the length of the windows of the public ECG sets this tool is built around.
ASSUMED_WINDOW_S = 10.0
_FINGERPRINT_VERSION = b"ecgsearch-dataset-v1\n"


@dataclass(frozen=True)
class NormStats:
    """Per-lead mean and standard deviation, computed on the training split only.

    A lead that is flat in a window (constant: a lead the recording lacks, stored as zeros) is missing
    there, not a signal. With `zero_flat_leads` (every statistic ecgsearch computes now) the mean and std
    of a lead come from the windows where it is present, and a flat lead becomes zeros, the value
    training-time lead dropout gives a lead it removes. Why: in MIT-BIH the third lead (V5) is present in
    one window in eleven, so its std over all windows is half its std where it is present, and plain
    normalisation doubled its amplitude against the other leads; the rhythm features sum the leads'
    QRS energy, and that reweighting cost their logistic regression 0.026 DS1 CV ROC-AUC (0.759 against
    0.785 on the unnormalised windows; 0.789 with present-only statistics). Statistics saved without the
    flag (bundles exported before it) keep plain `(X - mean) / std`, so they score as they were validated.
    """

    mean: list[float]
    std: list[float]
    zero_flat_leads: bool = False

    def apply(self, X: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """`(X - mean) / std` per lead, for `(N, leads, samples)` or `(leads, samples)` input; with
        `zero_flat_leads`, a lead that is constant in a window is 0 there."""
        if X.ndim < 2 or X.shape[-2] != len(self.mean):
            raise ValueError(
                f"input of shape {tuple(X.shape)} has {X.shape[-2] if X.ndim >= 2 else 0} leads; "
                f"expected {len(self.mean)} leads in dimension -2 (…, leads, samples)"
            )
        if isinstance(X, torch.Tensor):
            dtype = X.dtype if X.is_floating_point() else torch.float32
            mean = torch.tensor(self.mean, dtype=dtype, device=X.device).unsqueeze(-1)
            std = torch.tensor(self.std, dtype=dtype, device=X.device).unsqueeze(-1)
            scaled = (X.to(dtype) - mean) / std
            if not self.zero_flat_leads:
                return scaled
            return scaled.masked_fill(flat_leads(X).unsqueeze(-1), 0.0)
        dtype = X.dtype if X.dtype.kind == "f" else np.float32
        mean = np.asarray(self.mean, dtype=dtype)[:, None]
        std = np.asarray(self.std, dtype=dtype)[:, None]
        scaled = (X.astype(dtype, copy=False) - mean) / std
        if self.zero_flat_leads:
            scaled = np.where(flat_leads(X)[..., None], np.zeros((), dtype=dtype), scaled)
        return scaled

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "zero_flat_leads": self.zero_flat_leads}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormStats:
        missing = [key for key in ("mean", "std") if key not in data]
        if missing:
            raise ValueError(f"normalisation stats lack {', '.join(missing)}; expected keys 'mean' and 'std'")
        mean = [float(v) for v in data["mean"]]
        std = [float(v) for v in data["std"]]
        if len(mean) != len(std) or not mean:
            raise ValueError(
                f"normalisation stats have {len(mean)} means and {len(std)} stds; expected one of each per lead"
            )
        if any(not np.isfinite(s) or s <= 0 for s in std) or any(not np.isfinite(m) for m in mean):
            raise ValueError(f"normalisation stats need finite means and positive stds; got std={std}")
        zero_flat_leads = data.get("zero_flat_leads", False)
        if not isinstance(zero_flat_leads, bool):
            raise ValueError(f"normalisation field 'zero_flat_leads' must be true or false, got {zero_flat_leads!r}")
        return cls(mean=mean, std=std, zero_flat_leads=zero_flat_leads)


def flat_leads(X: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Boolean `X.shape[:-1]`: the leads that are constant over a window's samples (missing there)."""
    if isinstance(X, torch.Tensor):
        return (X.amax(dim=-1) - X.amin(dim=-1)) <= 0
    return np.ptp(X, axis=-1) <= 0


@dataclass
class ECGDataset:
    """Train/validation/test ECG windows: X float32 `(N, leads, samples)`, y float32 `(N,)` of 0/1, and
    optionally the patient of each window, `groups_<split>` int64 `(N,)` (all three or none).

    Treated as immutable: every transformation returns a new dataset.
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    groups_train: torch.Tensor | None = None
    groups_val: torch.Tensor | None = None
    groups_test: torch.Tensor | None = None

    def __post_init__(self) -> None:
        given = [name for name in GROUP_FIELDS if getattr(self, name) is not None]
        if given and len(given) < len(GROUP_FIELDS):
            raise ValueError(f"group ids given for {', '.join(given)} only; expected all of {GROUP_FIELDS} or none")

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, object],
        *,
        source: str = "<arrays>",
        meta: Mapping[str, Any] | None = None,
        origins: Mapping[str, str | Path] | None = None,
    ) -> ECGDataset:
        """A validated dataset from six tensors or numpy arrays keyed `X_train … y_test`, plus
        `groups_train/val/test` when the patients are known; `meta["fs"]`, when given, must be a rate.

        `origins` names the file each field (and `"meta"`) came from, for the messages.
        """
        origins = origins or {}
        origin_of = {name: origins.get(name, source) for name in (*FIELDS, *GROUP_FIELDS, "meta")}
        missing = [name for name in FIELDS if name not in arrays]
        if missing:
            raise DataError(source, ", ".join(missing), f"missing; expected all of {', '.join(FIELDS)}")
        tensors = validate_arrays(arrays, origin_of)
        if present_group_fields(arrays, source, "{}"):
            tensors.update(validate_groups(arrays, origin_of, tensors))
        meta = dict(meta or {})
        sampling_rate(meta, origin_of["meta"])
        return cls(**tensors, source=source, meta=meta)

    @property
    def n_channels(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def seq_len(self) -> int:
        return int(self.X_train.shape[2])

    @property
    def device(self) -> torch.device:
        return self.X_train.device

    @property
    def has_groups(self) -> bool:
        """Whether the patient of every window is known (`groups_train/val/test`)."""
        return all(getattr(self, name) is not None for name in GROUP_FIELDS)

    @property
    def fs(self) -> float | None:
        """The sampling rate in Hz from `meta["fs"]`, or None when the metadata does not give it."""
        return sampling_rate(self.meta, self.source)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The six arrays, then the three group id arrays when the dataset has them."""
        names = (*FIELDS, *GROUP_FIELDS) if self.has_groups else FIELDS
        return {name: getattr(self, name) for name in names}

    def groups(self, name: str) -> torch.Tensor | None:
        """The patient id of each window of split `name`, or None without group ids."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, f"groups_{name}")

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, f"X_{name}"), getattr(self, f"y_{name}")

    def fingerprint(self) -> str:
        """sha256 (hex) over the shapes, dtypes and contents of the arrays; the same in any process.

        Group ids, when present, are hashed after the six arrays, so a dataset without them hashes
        exactly as it did before group ids existed: studies created then still accept their data.
        """
        digest = hashlib.sha256(_FINGERPRINT_VERSION)
        for name, tensor in self.tensors().items():
            array = tensor.detach().cpu().contiguous().numpy()
            digest.update(f"{name}:{tuple(array.shape)}:{array.dtype.str}\n".encode())
            digest.update(memoryview(array).cast("B"))
        return digest.hexdigest()

    def norm_stats(self) -> NormStats:
        """Per-lead mean and std over the training windows where the lead is present (see NormStats); a
        lead flat in every training window gets mean 0 and std 1 (it is zeros after normalisation)."""
        X = self.X_train.to(torch.float64)
        present = ~flat_leads(X)  # (N, leads)
        count = present.sum(dim=0) * X.shape[-1]
        weight = present.unsqueeze(-1).to(X.dtype)
        total = (X * weight).sum(dim=(0, 2))
        mean = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
        squared = ((X - mean[:, None]).pow(2) * weight).sum(dim=(0, 2))
        var = torch.where(count > 0, squared / count.clamp_min(1), torch.ones_like(squared))
        std = var.sqrt().clamp_min(STD_FLOOR)
        return NormStats(mean=mean.tolist(), std=std.tolist(), zero_flat_leads=True)

    def normalised(self) -> tuple[ECGDataset, NormStats]:
        """Every split scaled by the training split's per-lead mean/std (std floored at 1e-6; flat leads 0)."""
        stats = self.norm_stats()
        scaled = {
            name: (stats.apply(tensor) if name.startswith("X_") else tensor) for name, tensor in self.tensors().items()
        }
        return self._replace(scaled), stats

    def to(self, device: torch.device | str) -> ECGDataset:
        return self._replace({name: tensor.to(device) for name, tensor in self.tensors().items()})

    def subset(
        self,
        max_train: int | None = None,
        max_val: int | None = None,
        max_test: int | None = None,
        seed: int = 0,
    ) -> ECGDataset:
        """At most `max_<split>` samples per split (None = all), stratified so both classes stay in
        every split, chosen deterministically from `seed`, in their original order."""
        limits = {"train": max_train, "val": max_val, "test": max_test}
        chosen: dict[str, torch.Tensor] = {}
        for index, split in enumerate(SPLITS):
            X, y = self.split(split)
            keep = _stratified_indices(y, limits[split], np.random.default_rng([seed, index]), split)
            keep_t = torch.as_tensor(keep, device=y.device)
            chosen[f"X_{split}"], chosen[f"y_{split}"] = X[keep_t], y[keep_t]
            if (groups := self.groups(split)) is not None:
                chosen[f"groups_{split}"] = groups[keep_t]
        result = self._replace(chosen)
        meta = {k: v for k, v in self.meta.items() if k not in ("prepare", "files")}
        meta["subset"] = {
            "from": self.source,
            **{f"max_{s}": limit for s, limit in limits.items()},
            "seed": seed,
        }
        meta["counts"] = split_counts(result)
        result.meta = meta
        return result

    def save(self, folder: str | Path) -> Path:
        """The six-file layout in `folder` (created), the three `groups_*.pt` files when the dataset has
        group ids, and `meta.json` when `meta` is set."""
        return write_layout(folder, self.tensors(), self.meta or None)

    def _replace(self, tensors: Mapping[str, torch.Tensor]) -> ECGDataset:
        return ECGDataset(**{**self.tensors(), **tensors}, source=self.source, meta=copy.deepcopy(self.meta))


def split_counts(data: ECGDataset) -> dict[str, dict[str, int]]:
    """Windows and windows labelled 1 per split."""
    counts = {}
    for split in SPLITS:
        _, y = data.split(split)
        counts[split] = {"windows": len(y), "labelled_1": int((y == 1).sum())}
    return counts


def _stratified_indices(y: torch.Tensor, limit: int | None, rng: np.random.Generator, split: str) -> np.ndarray:
    n = len(y)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 2:
        raise ValueError(f"max_{split}={limit} cannot keep both classes; expected at least 2 (or None for all)")
    labels = y.detach().cpu().numpy()
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
    n_pos = round(limit * len(positives) / n)
    # At least one of each class, wherever the split has one to give.
    lowest = max(min(1, len(positives)), limit - len(negatives))
    highest = min(len(positives), limit - min(1, len(negatives)))
    n_pos = min(max(n_pos, lowest), highest)
    n_neg = limit - n_pos
    keep = np.concatenate([rng.choice(positives, n_pos, replace=False), rng.choice(negatives, n_neg, replace=False)])
    return np.sort(keep)
