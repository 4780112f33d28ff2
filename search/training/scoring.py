"""The one scoring head: a model's raw output turned into a per-window anomaly score.

Classifiers score the sigmoid of their logit (a probability); autoencoders score the mean squared
reconstruction error of the window. `ScoringModel` is used by training (validation), retraining
(final metrics), the export (it is what the ONNX graph contains) and `predict`, so every place
computes a window's score the same way.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import ecgmodels

# Evaluation needs no activations for backward, so on a GPU it runs in larger batches. On a CPU the
# larger activations fall out of cache: a 512-window batch ran 2.7x slower than 128 for the default
# cnn here (bench/throughput.py, evaluation batch section), so CPU evaluation keeps the training batch size.
EVAL_BATCH_FACTOR = 4
CPU_EVAL_BATCH = 128


def eval_batch_size(device: torch.device | str, train_batch_size: int | None = None) -> int:
    """Windows per evaluation forward pass on `device`."""
    if torch.device(device).type == "cuda":
        return (train_batch_size or CPU_EVAL_BATCH) * EVAL_BATCH_FACTOR
    return min(train_batch_size or CPU_EVAL_BATCH, CPU_EVAL_BATCH)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when enabled; nothing on the CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_logits(out: Tensor, n: int) -> Tensor:
    if out.shape != (n,):
        raise ValueError(f"a classifier must return logits of shape (batch,) = ({n},), not {tuple(out.shape)}")
    return out


def check_training_logits(out: Tensor, n: int) -> Tensor:
    """Training-mode logits: (batch,), or (batch, parts) from a model whose parts are each supervised.

    A model that fuses independently trained parts (ecgmodels' rhythm branch with `average` fusion)
    returns every part's logit while training, so that each learns the labels on its own; in eval
    mode it returns the one fused logit like any classifier.
    """
    if out.dim() == 2 and out.shape[0] == n and out.shape[1] >= 1:
        return out
    return check_logits(out, n)


def check_reconstruction(out: Tensor, x: Tensor) -> Tensor:
    if out.shape != x.shape:
        raise ValueError(
            f"an autoencoder must return a reconstruction of the input's shape {tuple(x.shape)}, got {tuple(out.shape)}"
        )
    return out


class ScoringModel(nn.Module):
    """A model plus its score head: sigmoid probability (classifiers) or per-window MSE (autoencoders)."""

    def __init__(self, model: nn.Module, autoencoder: bool) -> None:
        super().__init__()
        self.model = model
        self.autoencoder = autoencoder

    def raw(self, x: Tensor, record_rr: Tensor | None = None) -> Tensor:
        """Logits (classifiers; the loss is computed on them) or reconstruction errors (autoencoders).
        `record_rr`: each window's record RR, the second input of a model with record-relative timing."""
        out = self.model(x) if record_rr is None else self.model(x, record_rr)
        if self.autoencoder:
            return (check_reconstruction(out, x).float() - x.float()).pow(2).mean(dim=tuple(range(1, x.dim())))
        return check_logits(out, x.shape[0]).float()

    def forward(self, x: Tensor, record_rr: Tensor | None = None) -> Tensor:
        raw = self.raw(x, record_rr)
        return raw if self.autoencoder else torch.sigmoid(raw)


def score(
    scorer: nn.Module,
    X: Tensor,
    *,
    record_rr: Tensor | None = None,
    batch_size: int | None = None,
    amp: bool = False,
    raw: bool = False,
) -> Tensor:
    """`scorer` over `X` (and the windows' `record_rr`, for a model with record-relative timing) in batches
    on X's device, in eval mode: scores (or a ScoringModel's raw outputs), float32 (N,)."""
    batch_size = batch_size or eval_batch_size(X.device)
    scorer.eval()
    head = scorer.raw if raw else scorer
    parts: list[Tensor] = []
    with torch.inference_mode(), autocast(X.device, amp):
        for start in range(0, X.shape[0], batch_size):
            window = slice(start, start + batch_size)
            inputs = (X[window],) if record_rr is None else (X[window], record_rr[window].to(X.device))
            parts.append(head(*inputs).float())
    return torch.cat(parts) if parts else torch.empty(0, device=X.device)


def score_windows(
    model: nn.Module,
    X: Tensor,
    *,
    autoencoder: bool,
    groups: Tensor | None = None,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    amp: bool = False,
) -> np.ndarray:
    """Anomaly scores of (normalised) windows `X` (of patients `groups`, which a model with record-relative
    timing needs) as a float32 numpy array (N,), computed on `device`."""
    device = torch.device(device)
    scorer = ScoringModel(model.to(device), autoencoder)
    X = X.to(device)
    record_rr = ecgmodels.record_rr_for(model, X, groups)
    return score(scorer, X, record_rr=record_rr, batch_size=batch_size, amp=amp).cpu().numpy()
