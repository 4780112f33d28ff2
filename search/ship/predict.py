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
OUTPUT_SUFFIXES = (".csv", ".json")


@dataclass
class Predictions:
    scores: np.ndarray  # float (N,): probability or reconstruction error
    labels: np.ndarray  # int (N,): 1 = anomalous (score >= threshold)
    score_kind: str
    threshold: float


def load_windows(path: str | Path) -> np.ndarray:
    """Windows from `.pt` (a tensor), `.npy`, or `.npz` (key X or X_test, else its only array), as
    float32 (N, leads, samples); a single 2-D window (leads, samples) becomes N = 1."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "path", "does not exist; expected a .pt, .npy or .npz file of windows")
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise DataError(path, "path", f"has suffix {path.suffix or '(none)'!r}; expected one of {INPUT_SUFFIXES}")
    field = "X"
    try:
        if suffix == ".pt":
            value = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(value, torch.Tensor):
                raise DataError(path, field, f"holds a {type(value).__name__}; expected one tensor of windows")
            array = value.detach().float().numpy()
        elif suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                field = next((k for k in NPZ_KEYS if k in keys), keys[0] if len(keys) == 1 else "")
                if not field:
                    raise DataError(
                        path,
                        "keys",
                        f"holds {', '.join(keys) or 'no arrays'}; expected a key "
                        f"{' or '.join(NPZ_KEYS)}, or exactly one array",
                    )
                array = archive[field]
    except DataError:
        raise
    except Exception as error:  # unpickling, zip and format errors all mean the same to the user
        raise DataError(path, field, f"cannot be read ({type(error).__name__}: {error})") from None
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


def check_shape(windows: np.ndarray, bundle: Bundle, path: str | Path) -> None:
    expected = (bundle.n_channels, bundle.window_length)
    if tuple(windows.shape[1:]) != expected:
        raise DataError(
            path,
            "X",
            f"windows have shape {tuple(windows.shape)} (N, leads, samples) but the model in {bundle.path} "
            f"expects (N, {expected[0]}, {expected[1]}): {expected[0]} lead(s) of {expected[1]} samples",
        )


def predict(bundle: Bundle, windows: np.ndarray, *, runtime: str = "torch", batch_size: int = 256) -> Predictions:
    """Normalise raw `windows` with the bundle's statistics and score them with `runtime` (one model or an
    ensemble alike: the ONNX graph and `bundle.scorer` both hold the whole scoring model)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: expected an integer >= 1")
    normalised = bundle.norm.apply(np.ascontiguousarray(windows, dtype=np.float32))
    if runtime == "onnx":
        onnx_path = bundle.path / ONNX_FILE
        if not onnx_path.is_file():
            raise DataError(onnx_path, "model.onnx", "is missing; use --runtime torch or re-export the bundle")
        scores = onnx_scores(onnx_path, normalised, batch_size=batch_size)
    else:
        scores = score(bundle.scorer, torch.from_numpy(normalised), batch_size=batch_size).numpy()
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
