"""ONNX export of a scoring model, checked against PyTorch with onnxruntime before it is declared done.

The exported graph is the scoring model itself (`search.training.scoring.ScoringModel`, or the
ensemble of `search.ship.ensemble`): windows in, one anomaly score per window out, so a service needs
no code of ours to score. Normalisation stays outside the graph (it is stored in config.json). A model
with record-relative timing has a second input, `record_rr`: each window's record RR in seconds
(`ecgmodels.record_rr`, the median R-R interval of the patient's windows).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from search.training.scoring import score

ONNX_OPSET = 17
ONNX_INPUT = "x"
ONNX_RECORD_RR = "record_rr"  # the second input of a model with record-relative timing
ONNX_OUTPUT = "score"
# float32 through different kernels (MKL-DNN vs onnxruntime's) differs by ~1e-6; more means a wrong graph.
ONNX_TOLERANCE = 1e-4
# Enough real windows to exercise every kernel, few enough for an LSTM over 2000 steps to stay quick.
ONNX_CHECK_WINDOWS = 32


class OnnxExportError(RuntimeError):
    """The model could not be exported to ONNX, or the ONNX graph scores differently than PyTorch."""


def onnx_inputs(X: np.ndarray, record_rr: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The graph's inputs by name: the windows, and their record RR for a model with record-relative timing."""
    inputs = {ONNX_INPUT: np.ascontiguousarray(X, dtype=np.float32)}
    if record_rr is not None:
        inputs[ONNX_RECORD_RR] = np.ascontiguousarray(record_rr, dtype=np.float32).reshape(-1)
    return inputs


def onnx_scores(
    onnx_path: Path, X: np.ndarray, *, record_rr: np.ndarray | None = None, batch_size: int = 256
) -> np.ndarray:
    """Scores from the ONNX graph through onnxruntime (CPU), as a float32 array (N,)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = onnx_inputs(X, record_rr)
    parts = [
        session.run([ONNX_OUTPUT], {name: value[start : start + batch_size] for name, value in inputs.items()})[0]
        for start in range(0, inputs[ONNX_INPUT].shape[0], batch_size)
    ]
    return np.concatenate(parts).astype(np.float32) if parts else np.empty(0, dtype=np.float32)


def export_onnx(
    scorer: nn.Module, *, family: str, windows: Tensor, path: Path, record_rr: Tensor | None = None
) -> float:
    """Write `scorer` (windows -> scores, on the CPU) as ONNX to `path`; check it on `windows` (normalised, real;
    with their `record_rr` when the scorer takes it, which adds the graph's second input).

    Returns the largest absolute difference between onnxruntime's and PyTorch's scores; raises
    `OnnxExportError` naming the family when export fails or the difference exceeds ONNX_TOLERANCE.
    """
    if windows.dim() != 3 or windows.shape[0] == 0:
        raise ValueError(f"need at least one window (N, leads, samples) to check ONNX, got {tuple(windows.shape)}")
    scorer = scorer.cpu().eval()
    windows = windows[:ONNX_CHECK_WINDOWS].detach().float().cpu()
    if record_rr is not None:
        record_rr = record_rr[:ONNX_CHECK_WINDOWS].detach().float().cpu()
    _write_graph(scorer, family=family, windows=windows, record_rr=record_rr, path=path)
    expected = score(scorer, windows, record_rr=record_rr).numpy()
    try:
        got = onnx_scores(path, windows.numpy(), record_rr=None if record_rr is None else record_rr.numpy())
    except Exception as error:
        raise OnnxExportError(
            f"the ONNX graph of model family {family!r} does not run in onnxruntime: {type(error).__name__}: {error}"
        ) from error
    if got.shape != expected.shape:
        raise OnnxExportError(
            f"the ONNX graph of model family {family!r} returns shape {got.shape}, PyTorch {expected.shape}"
        )
    difference = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
    if not difference <= ONNX_TOLERANCE:  # also catches NaN
        raise OnnxExportError(
            f"the ONNX graph of model family {family!r} scores differently than PyTorch on "
            f"{windows.shape[0]} real windows: max abs difference {difference:.3g} > {ONNX_TOLERANCE:g}"
        )
    return difference


def _write_graph(scorer: nn.Module, *, family: str, windows: Tensor, record_rr: Tensor | None, path: Path) -> None:
    # Two windows at export time, so no dimension of size 1 gets specialised into the graph.
    index = torch.arange(2) % windows.shape[0]
    inputs: tuple[Tensor, ...] = (windows[index],) if record_rr is None else (windows[index], record_rr[index])
    names = [ONNX_INPUT] if record_rr is None else [ONNX_INPUT, ONNX_RECORD_RR]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
            # onnxscript (not a dependency); the TorchScript one exports every family here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                scorer,
                inputs,
                str(path),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=names,
                output_names=[ONNX_OUTPUT],
                dynamic_axes={**{name: {0: "batch"} for name in names}, ONNX_OUTPUT: {0: "batch"}},
            )
    except Exception as error:
        raise OnnxExportError(
            f"model family {family!r} could not be exported to ONNX (opset {ONNX_OPSET}): "
            f"{type(error).__name__}: {error}"
        ) from error
