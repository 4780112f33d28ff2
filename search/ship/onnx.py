"""ONNX export of a scoring model, checked against PyTorch with onnxruntime before it is declared done.

The exported graph is the scoring model itself (`search.training.scoring.ScoringModel`, or the
ensemble of `search.ship.ensemble`): windows in, one anomaly score per window out, so a service needs
no code of ours to score. Normalisation stays outside the graph (it is stored in config.json).
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
ONNX_OUTPUT = "score"
# float32 through different kernels (MKL-DNN vs onnxruntime's) differs by ~1e-6; more means a wrong graph.
ONNX_TOLERANCE = 1e-4
# Enough real windows to exercise every kernel, few enough for an LSTM over 2000 steps to stay quick.
ONNX_CHECK_WINDOWS = 32


class OnnxExportError(RuntimeError):
    """The model could not be exported to ONNX, or the ONNX graph scores differently than PyTorch."""


def onnx_scores(onnx_path: Path, X: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Scores from the ONNX graph through onnxruntime (CPU), as a float32 array (N,)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    X = np.ascontiguousarray(X, dtype=np.float32)
    parts = [
        session.run([ONNX_OUTPUT], {ONNX_INPUT: X[start : start + batch_size]})[0]
        for start in range(0, X.shape[0], batch_size)
    ]
    return np.concatenate(parts).astype(np.float32) if parts else np.empty(0, dtype=np.float32)


def export_onnx(scorer: nn.Module, *, family: str, windows: Tensor, path: Path) -> float:
    """Write `scorer` (windows -> scores, on the CPU) as ONNX to `path`; check it on `windows` (normalised, real).

    Returns the largest absolute difference between onnxruntime's and PyTorch's scores; raises
    `OnnxExportError` naming the family when export fails or the difference exceeds ONNX_TOLERANCE.
    """
    if windows.dim() != 3 or windows.shape[0] == 0:
        raise ValueError(f"need at least one window (N, leads, samples) to check ONNX, got {tuple(windows.shape)}")
    scorer = scorer.cpu().eval()
    windows = windows[:ONNX_CHECK_WINDOWS].detach().float().cpu()
    _write_graph(scorer, family=family, windows=windows, path=path)
    expected = score(scorer, windows).numpy()
    try:
        got = onnx_scores(path, windows.numpy())
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


def _write_graph(scorer: nn.Module, *, family: str, windows: Tensor, path: Path) -> None:
    # Two windows at export time, so no dimension of size 1 gets specialised into the graph.
    example = windows[:2] if windows.shape[0] >= 2 else windows.repeat(2, 1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
            # onnxscript (not a dependency); the TorchScript one exports every family here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                scorer,
                (example,),
                str(path),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
            )
    except Exception as error:
        raise OnnxExportError(
            f"model family {family!r} could not be exported to ONNX (opset {ONNX_OPSET}): "
            f"{type(error).__name__}: {error}"
        ) from error
