"""Checks and coercions that turn user-supplied arrays (six, plus three optional patient group id
arrays) and the sampling rate of `meta.json` into a dataset the trainer can trust.

Every check runs before any training starts, and every failure is a `DataError` naming the file the
array came from, the field, and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.data.errors import DataError

SPLITS = ("train", "val", "test")
FIELDS = tuple(f"{kind}_{split}" for split in SPLITS for kind in ("X", "y"))
# Optional: the patient of each window, all three or none.
GROUP_FIELDS = tuple(f"groups_{split}" for split in SPLITS)
CLASS_NAMES = {0: "0 (normal)", 1: "1 (anomalous)"}
_SHOWN_BAD_VALUES = 10


def validate_arrays(arrays: Mapping[str, object], origins: Mapping[str, str | Path]) -> dict[str, torch.Tensor]:
    """The six arrays as float32 CPU tensors (X `(N, C, L)`, y `(N,)` of 0/1), or a `DataError`.

    `origins[field]` is the file each array was read from, so messages point at it.
    """
    tensors: dict[str, torch.Tensor] = {}
    for split in SPLITS:
        x_field, y_field = f"X_{split}", f"y_{split}"
        X = _check_X(arrays[x_field], origins[x_field], x_field)
        y = _check_y(arrays[y_field], origins[y_field], y_field)
        if len(y) != len(X):
            raise DataError(
                origins[y_field],
                y_field,
                f"has {len(y)} labels but {x_field} has {len(X)} samples; expected one label per sample",
            )
        tensors[x_field], tensors[y_field] = X, y
    _check_splits_agree(tensors, origins)
    for split in SPLITS:
        _check_both_classes(tensors[f"y_{split}"], origins[f"y_{split}"], f"y_{split}")
    return tensors


def present_group_fields(names: Iterable[str], origin: str | Path, what: str) -> tuple[str, ...]:
    """The group fields among `names`: all three or none, else a `DataError` naming the missing ones.

    `what` says how a field is named in the source (e.g. "{}.pt" for files, "{}" for keys).
    """
    present = [field for field in GROUP_FIELDS if field in set(names)]
    if present and len(present) < len(GROUP_FIELDS):
        missing = [what.format(field) for field in GROUP_FIELDS if field not in present]
        found = [what.format(field) for field in present]
        raise DataError(
            origin,
            ", ".join(field for field in GROUP_FIELDS if field not in present),
            f"missing {', '.join(missing)} beside {', '.join(found)}; patient group ids come as all three "
            f"of {', '.join(what.format(f) for f in GROUP_FIELDS)} (one int64 id per window) or none",
        )
    return tuple(present)


def validate_groups(
    arrays: Mapping[str, object], origins: Mapping[str, str | Path], labels: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The three group arrays as int64 CPU tensors of one id per window (`labels[f"y_{split}"]`), or a `DataError`."""
    groups = {}
    for split in SPLITS:
        field = f"groups_{split}"
        groups[field] = _check_groups(arrays[field], origins[field], field, len(labels[f"y_{split}"]))
    return groups


def _check_groups(value: object, origin: str | Path, field: str, n_windows: int) -> torch.Tensor:
    groups = _as_tensor(value, origin, field)
    if groups.is_floating_point() or groups.dtype == torch.bool:
        raise DataError(origin, field, f"has dtype {groups.dtype}; expected integer patient ids (int64)")
    if groups.ndim != 1:
        raise DataError(origin, field, f"has shape {tuple(groups.shape)}; expected shape (N,), one id per window")
    if len(groups) != n_windows:
        split = field.removeprefix("groups_")
        raise DataError(
            origin,
            field,
            f"has {len(groups)} ids but y_{split} has {n_windows} labels; expected one patient id per window",
        )
    return groups.to(torch.int64).contiguous()


def _as_tensor(value: object, origin: str | Path, field: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise DataError(origin, field, f"has numpy dtype {value.dtype}; expected numbers (float, int or bool)")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise DataError(origin, field, f"has dtype {value.dtype}; expected real numbers")
        return value.detach().cpu()
    raise DataError(origin, field, f"holds a {type(value).__name__}; expected a torch tensor or a numpy array")


def _check_X(value: object, origin: str | Path, field: str) -> torch.Tensor:
    X = _as_tensor(value, origin, field)
    if X.ndim != 3:
        raise DataError(
            origin,
            field,
            f"has shape {tuple(X.shape)} ({X.ndim}-D); expected a 3-D array (samples N, leads, time steps)",
        )
    if X.shape[1] == 0 or X.shape[2] == 0:
        raise DataError(origin, field, f"has shape {tuple(X.shape)}; expected at least one lead and one time step")
    X = X.to(torch.float32).contiguous()
    finite = torch.isfinite(X)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(X).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise DataError(
            origin,
            field,
            f"contains {n_nan} NaN and {n_inf} infinite values (as float32); expected finite numbers",
        )
    return X


def _check_y(value: object, origin: str | Path, field: str) -> torch.Tensor:
    y = _as_tensor(value, origin, field)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(origin, field, f"has shape {tuple(y.shape)}; expected shape (N,) or (N, 1)")
    y = y.to(torch.float32)
    bad = ~((y == 0) | (y == 1))
    if bool(bad.any()):
        values = torch.unique(y[bad])
        shown = ", ".join(f"{v:g}" for v in values[:_SHOWN_BAD_VALUES].tolist())
        more = f" and {len(values) - _SHOWN_BAD_VALUES} more" if len(values) > _SHOWN_BAD_VALUES else ""
        raise DataError(
            origin,
            field,
            f"holds labels {shown}{more} ({int(bad.sum())} samples); expected only 0 (normal) and 1 (anomalous)",
        )
    return y.contiguous()


def _check_splits_agree(tensors: Mapping[str, torch.Tensor], origins: Mapping[str, str | Path]) -> None:
    reference = tensors["X_train"]
    for split in SPLITS[1:]:
        field = f"X_{split}"
        X = tensors[field]
        if X.shape[1] != reference.shape[1]:
            raise DataError(
                origins[field],
                field,
                f"has {X.shape[1]} leads but X_train has {reference.shape[1]}; expected the same leads in every split",
            )
        if X.shape[2] != reference.shape[2]:
            raise DataError(
                origins[field],
                field,
                f"has {X.shape[2]} time steps per sample but X_train has {reference.shape[2]}; "
                "expected the same length in every split",
            )


def _check_both_classes(y: torch.Tensor, origin: str | Path, field: str) -> None:
    if len(y) == 0:
        raise DataError(origin, field, "is empty; expected samples of both classes 0 and 1")
    present = sorted({int(v) for v in torch.unique(y).tolist()})
    if len(present) < 2:
        raise DataError(
            origin,
            field,
            f"holds only class {CLASS_NAMES[present[0]]} ({len(y)} samples); expected both classes "
            "0 and 1 in every split (ROC AUC and thresholds need both)",
        )


def sampling_rate(meta: Mapping[str, Any], origin: str | Path) -> float | None:
    """`meta["fs"]` in Hz, None when the metadata does not give it, or a `DataError` when it is not a rate."""
    fs = meta.get("fs")
    if fs is None:
        return None
    if isinstance(fs, bool) or not isinstance(fs, int | float) or not math.isfinite(fs) or fs <= 0:
        raise DataError(origin, "fs", f"is {fs!r}; expected the sampling rate in Hz as a positive number (e.g. 200)")
    return float(fs)
