"""Reading a dataset from disk: a folder of six `.pt` files or one `.npz`, validated before use."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.data.dataset import FIELDS, ECGDataset
from search.data.errors import DataError
from search.data.store import META_FILE, read_meta

EXPECTED_LAYOUT = (
    "expected a folder with X_train.pt, y_train.pt, X_val.pt, y_val.pt, X_test.pt, y_test.pt "
    "or one .npz file with those six keys"
)


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
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(
            path,
            field,
            f"cannot be read with torch.load(weights_only=True) ({reason[:200]}); "
            "expected a tensor or numpy array written by torch.save",
        ) from error


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
            arrays = {field: archive[field] for field in FIELDS}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(path, "npz", f"cannot be read by numpy.load ({error}); {EXPECTED_LAYOUT}") from error
    return arrays, {field: path for field in FIELDS}
