"""Writing the six-file layout (plus the optional `groups_*.pt` files), and telling whether a folder
already holds a complete, matching write.

`meta.json` is written last and records the size of every file, so a folder whose write was
interrupted, or whose files were replaced since, is never taken for a finished one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from search.data.errors import DataError
from search.data.validation import FIELDS, GROUP_FIELDS

META_FILE = "meta.json"


def write_layout(folder: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None) -> Path:
    """`X_train.pt … y_test.pt`, `groups_*.pt` when `tensors` has them (+ `meta.json` with the file sizes
    when `meta` is given) in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / META_FILE
    # A stale meta.json beside half-written tensors would make them look complete, and stale group
    # files of an earlier write would be loaded as the patients of these windows.
    meta_path.unlink(missing_ok=True)
    for field in GROUP_FIELDS:
        (folder / f"{field}.pt").unlink(missing_ok=True)
    sizes: dict[str, int] = {}
    for field in layout_fields(tensors):
        path = folder / f"{field}.pt"
        # clone(): saving a view would write the whole storage it slices.
        torch.save(tensors[field].detach().cpu().contiguous().clone(), path)
        sizes[f"{field}.pt"] = path.stat().st_size
    if meta is not None:
        full = {**meta, "files": sizes}
        meta_path.write_text(json.dumps(full, indent=2) + "\n")
    return folder


def layout_fields(names: Iterable[str]) -> tuple[str, ...]:
    """The fields a layout holds: the six, plus the three group fields when `names` has any of them
    (as fields or as `<field>.pt` file names)."""
    stems = {name.removesuffix(".pt") for name in names}
    return (*FIELDS, *GROUP_FIELDS) if stems & set(GROUP_FIELDS) else FIELDS


def read_meta(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or a `DataError` saying why it cannot be used."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(path, "meta", f"cannot be read as JSON ({error}); expected a JSON object") from error
    if not isinstance(meta, dict):
        raise DataError(path, "meta", f"holds a JSON {type(meta).__name__}; expected a JSON object")
    return meta


def completed_write(folder: str | Path, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The meta of a complete earlier write into `folder` made with exactly `settings`, else None."""
    meta_path = Path(folder) / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = read_meta(meta_path)
    except DataError:
        return None
    if meta.get("prepare") != dict(settings):
        return None
    sizes = meta.get("files")
    if not isinstance(sizes, dict) or set(sizes) != {f"{field}.pt" for field in layout_fields(sizes)}:
        return None
    for name, size in sizes.items():
        path = Path(folder) / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return meta
