"""Reading a dataset from disk: a folder of six `.pt` files or one `.npz` (each optionally with the three
patient group id arrays), validated before use."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.data.dataset import FIELDS, ECGDataset
from search.data.errors import DataError
from search.data.store import META_FILE, read_meta
from search.data.validation import GROUP_FIELDS, present_group_fields

EXPECTED_LAYOUT = (
    "expected a folder with X_train.pt, y_train.pt, X_val.pt, y_val.pt, X_test.pt, y_test.pt "
    "(and optionally groups_train.pt, groups_val.pt, groups_test.pt) or one .npz file with those keys"
)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# What torch's weights-only unpickler names when a file holds something other than tensors and arrays.
_PICKLED_TYPE = re.compile(r"Unsupported global: GLOBAL (\S+)|but got <class '([^']+)'>")
# torch follows the cause with advice: loading with weights_only=False (which runs code from the file)
# or allowlisting globals. Neither is safe to pass on for a data file, so no such sentence is shown.
_UNSAFE_ADVICE = re.compile(r"weights_only|safe_globals|re-running|trust", re.IGNORECASE)


def load_dataset(path: str | Path) -> ECGDataset:
    """The validated dataset at `path`; any problem is a `DataError` naming file, field and expectation."""
    path = Path(path)
    if path.is_dir():
        arrays, origins = _read_folder(path)
        meta_path = path / META_FILE
    elif path.is_file():
        if path.suffix != ".npz":
            raise DataError(path, "path", f"is a {path.suffix or 'suffix-less'} file; {EXPECTED_LAYOUT}")
        arrays, origins = _read_npz(path)
        meta_path = path.with_suffix(".meta.json")
    else:
        raise DataError(path, "path", f"does not exist; {EXPECTED_LAYOUT}")
    meta = read_meta(meta_path) if meta_path.is_file() else {}
    origins["meta"] = meta_path
    return ECGDataset.from_arrays(arrays, source=str(path), meta=meta, origins=origins)


def _read_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    origins = {field: folder / f"{field}.pt" for field in FIELDS}
    missing = [origin.name for origin in origins.values() if not origin.is_file()]
    if missing:
        npz = sorted(p.name for p in folder.glob("*.npz"))
        hint = f" (found {', '.join(npz)}: pass that file instead)" if npz else ""
        raise DataError(
            folder,
            ", ".join(Path(m).stem for m in missing),
            f"missing {', '.join(missing)}; {EXPECTED_LAYOUT}{hint}",
        )
    on_disk = [field for field in GROUP_FIELDS if (folder / f"{field}.pt").is_file()]
    origins.update({field: folder / f"{field}.pt" for field in present_group_fields(on_disk, folder, "{}.pt")})
    return {field: _load_tensor_file(origin, field) for field, origin in origins.items()}, origins


def _numpy_globals() -> list[Any]:
    """What `torch.load(weights_only=True)` must be allowed to build for numpy arrays (numeric dtypes)."""
    from numpy._core.multiarray import _reconstruct

    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [
        _reconstruct,
        (_reconstruct, "numpy.core.multiarray._reconstruct"),  # files written under numpy 1.x
        np.ndarray,
        np.dtype,
        *(dtype for dtype in dtypes if dtype is not np.dtypes.ObjectDType),
    ]


def _load_tensor_file(path: Path, field: str) -> Any:
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unpickling/zip/IO failure means the same thing to the user
        raise DataError(
            path,
            field,
            f"cannot be read ({load_failure_reason(error)}); expected a tensor or numeric numpy array saved "
            "with torch.save (data files are loaded without running any code they hold)",
        ) from error


def load_failure_reason(error: BaseException) -> str:
    """The informative part of a `torch.load` failure: what the file holds or where reading broke,
    without torch's advice to load it in a way that may run code from the file."""
    text = _ANSI_ESCAPE.sub("", str(error)).strip()
    if match := _PICKLED_TYPE.search(text):
        name = match.group(1) or match.group(2)
        what = "numpy array of Python objects" if name.endswith("ObjectDType") else name
        return f"it holds a pickled {what}, not a tensor or numeric array"
    _, marker, cause = text.partition("WeightsUnpickler error:")
    detail = cause if marker else text
    first_line = next((line.strip() for line in detail.splitlines() if line.strip()), "")
    sentence = first_line.split(". ")[0].rstrip(".")
    if not sentence or _UNSAFE_ADVICE.search(sentence):
        return type(error).__name__
    return sentence[:200]


def _read_npz(path: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            missing = [field for field in FIELDS if field not in keys]
            if missing:
                raise DataError(
                    path,
                    ", ".join(missing),
                    f"missing key(s); found {', '.join(sorted(keys)) or 'no arrays'}; {EXPECTED_LAYOUT}",
                )
            fields = (*FIELDS, *present_group_fields(keys, path, "{}"))
            arrays = {field: archive[field] for field in fields}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(path, "npz", f"cannot be read by numpy.load ({error}); {EXPECTED_LAYOUT}") from error
    return arrays, dict.fromkeys(arrays, path)
