"""Score new ECG windows with an export bundle, through PyTorch or ONNX Runtime, and write the result."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from search.data import DataError
from search.errors import UsageError
from search.ship.bundle import ONNX_FILE, Bundle
from search.ship.onnx import onnx_scores
from search.training.scoring import score

RUNTIMES = ("torch", "onnx")
INPUT_SUFFIXES = (".pt", ".npy", ".npz")
NPZ_KEYS = ("X", "X_test")
GROUPS_NPZ_KEYS = ("groups", "groups_test")
OUTPUT_SUFFIXES = (".csv", ".json")


@dataclass
class Predictions:
    scores: np.ndarray  # float (N,): probability or reconstruction error
    labels: np.ndarray  # int (N,): 1 = anomalous (score >= threshold)
    score_kind: str
    threshold: float


def read_array(path: str | Path, *, what: str, npz_keys: tuple[str, ...]) -> tuple[np.ndarray, str]:
    """(the array, the field it came from) in `.pt` (a tensor), `.npy`, or `.npz` (the first of `npz_keys`
    it holds, else its only array); `what` names the content in messages."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "path", f"does not exist; expected a .pt, .npy or .npz file of {what}")
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise DataError(path, "path", f"has suffix {path.suffix or '(none)'!r}; expected one of {INPUT_SUFFIXES}")
    field = npz_keys[0]
    try:
        if suffix == ".pt":
            value = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(value, torch.Tensor):
                raise DataError(path, field, f"holds a {type(value).__name__}; expected one tensor of {what}")
            value = value.detach()
            return (value.float() if value.is_floating_point() else value).numpy(), field
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), field
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            field = next((k for k in npz_keys if k in keys), keys[0] if len(keys) == 1 else "")
            if not field:
                raise DataError(
                    path,
                    "keys",
                    f"holds {', '.join(keys) or 'no arrays'}; expected a key "
                    f"{' or '.join(npz_keys)}, or exactly one array",
                )
            return archive[field], field
    except DataError:
        raise
    except Exception as error:  # unpickling, zip and format errors all mean the same to the user
        raise DataError(path, field, f"cannot be read ({type(error).__name__}: {error})") from None


def load_windows(path: str | Path) -> np.ndarray:
    """Windows from `.pt` (a tensor), `.npy`, or `.npz` (key X or X_test, else its only array), as
    float32 (N, leads, samples); a single 2-D window (leads, samples) becomes N = 1."""
    array, field = read_array(path, what="windows", npz_keys=NPZ_KEYS)
    if array.dtype.kind not in "fiu":
        raise DataError(path, field, f"has dtype {array.dtype}; expected numbers (float32 windows)")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise DataError(
            path, field, f"has shape {tuple(array.shape)}; expected (N, leads, samples) or (leads, samples)"
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise DataError(path, field, "holds NaN or inf values; expected finite samples")
    return array


def load_groups(path: str | Path, n_windows: int) -> np.ndarray:
    """Patient ids, one whole number per window, from `.pt`, `.npy` or `.npz` (key groups, else its only
    array), as int64 (N,)."""
    array, field = read_array(path, what="patient ids", npz_keys=GROUPS_NPZ_KEYS)
    if array.dtype.kind not in "iu" or array.shape != (n_windows,):
        raise DataError(
            path,
            field,
            f"has dtype {array.dtype} and shape {tuple(array.shape)}; expected one integer patient id per "
            f"window, shape ({n_windows},)",
        )
    return array.astype(np.int64)


def check_shape(windows: np.ndarray, bundle: Bundle, path: str | Path) -> None:
    expected = (bundle.n_channels, bundle.window_length)
    if tuple(windows.shape[1:]) != expected:
        raise DataError(
            path,
            "X",
            f"windows have shape {tuple(windows.shape)} (N, leads, samples) but the model in {bundle.path} "
            f"expects (N, {expected[0]}, {expected[1]}): {expected[0]} lead(s) of {expected[1]} samples",
        )


def predict(
    bundle: Bundle,
    windows: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    runtime: str = "torch",
    batch_size: int = 256,
) -> Predictions:
    """Normalise raw `windows` with the bundle's statistics and score them with `runtime` (one model or an
    ensemble alike: the ONNX graph and `bundle.scorer` both hold the whole scoring model). A model with
    record-relative timing needs `groups`, the patient of each window: its second input, each window's
    record RR, comes from the windows of the same patient, as in training."""
    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: expected an integer >= 1")
    if bundle.record_relative and groups is None:
        raise UsageError(
            f"the model in {bundle.path} uses record-relative timing (config.json: record_rr): give the patient "
            "of each window with --groups FILE (one integer id per window)"
        )
    patients = None if groups is None else torch.as_tensor(groups, dtype=torch.int64)
    raw = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
    X, record_rr = bundle.model_inputs(raw, groups=patients)
    if runtime == "onnx":
        onnx_path = bundle.path / ONNX_FILE
        if not onnx_path.is_file():
            raise DataError(onnx_path, "model.onnx", "is missing; use --runtime torch or re-export the bundle")
        rr = None if record_rr is None else record_rr.numpy()
        scores = onnx_scores(onnx_path, X.numpy(), record_rr=rr, batch_size=batch_size)
    else:
        scores = score(bundle.scorer, X, record_rr=record_rr, batch_size=batch_size).numpy()
    return Predictions(
        scores=scores,
        labels=(scores >= bundle.threshold).astype(np.int64),
        score_kind=bundle.score_kind,
        threshold=bundle.threshold,
    )


def to_csv(predictions: Predictions) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["window", predictions.score_kind, "label"])
    for index, (value, label) in enumerate(zip(predictions.scores, predictions.labels, strict=True)):
        writer.writerow([index, repr(float(value)), int(label)])
    return buffer.getvalue()


def to_json(predictions: Predictions) -> str:
    return (
        json.dumps(
            {
                "score_kind": predictions.score_kind,
                "threshold": predictions.threshold,
                "predictions": [
                    {"window": i, "score": float(s), "label": int(label)}
                    for i, (s, label) in enumerate(zip(predictions.scores, predictions.labels, strict=True))
                ],
            },
            indent=2,
        )
        + "\n"
    )


def check_out_suffix(out: str | Path) -> None:
    if Path(out).suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--out {out}: expected a .csv or .json file name")


def write_predictions(predictions: Predictions, out: str | Path) -> Path:
    """CSV or JSON by the suffix of `out`."""
    check_out_suffix(out)
    out = Path(out)
    text = to_csv(predictions) if out.suffix.lower() == ".csv" else to_json(predictions)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out
