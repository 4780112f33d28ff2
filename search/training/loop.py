"""The training loop: one `fit` used by the search and by retraining, read top to bottom.

Fast by construction: the data lives on the device, batches are index slices of it (no DataLoader),
the loss is summed on the device and copied to the host once per epoch, bf16 autocast on CUDA.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from search.errors import UsageError
from search.training.config import ConfigError, TrainConfig
from search.training.metrics import choose_threshold, classification_metrics, scalar_metrics
from search.training.scoring import (
    ScoringModel,
    autocast,
    check_logits,
    check_reconstruction,
    eval_batch_size,
    score,
)

# How often (in batches) the device-side NaN/inf flag is read back: one host sync per this many steps.
NAN_CHECK_EVERY = 25
# ReduceLROnPlateau settings: halve the learning rate after this many epochs without improvement.
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 2
# Objectives that make a sensible autoencoder threshold; the others (ROC/PR-AUC do not depend on the
# threshold; recall_1 or a precision alone is maximised by a degenerate one) fall back to f1_macro.
AE_THRESHOLD_OBJECTIVES = ("f1_macro", "f1_1", "accuracy", "recall_macro")

EpochCallback = Callable[[int, dict[str, float]], None]


class SplitData(Protocol):
    """What `fit` needs of an `ECGDataset`."""

    X_train: Tensor
    y_train: Tensor
    X_val: Tensor
    y_val: Tensor
    X_test: Tensor
    y_test: Tensor


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or inf; continuing would train on garbage."""

    def __init__(self, epoch: int, batch: int | None, what: str, lr: float) -> None:
        where = f"epoch {epoch}" + (f", batch {batch}" if batch is not None else "")
        super().__init__(
            f"training diverged at {where}: {what} became NaN or inf; "
            f"try a lower learning rate (lr={lr:g}), gradient clipping (grad_clip), or loss='bce'"
        )
        self.epoch, self.batch, self.what, self.lr = epoch, batch, what, lr

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.epoch, self.batch, self.what, self.lr))


@dataclass
class FitResult:
    history: list[dict[str, Any]]  # one entry per finished epoch, confusion matrix included
    best_epoch: int
    best_value: float  # the objective at best_epoch
    best_metrics: dict[str, Any]  # the history entry of best_epoch
    best_state: dict[str, Tensor] = field(repr=False)  # CPU copy; also loaded into the model
    threshold: float  # autoencoders: chosen on validation at best_epoch; classifiers 0.5
    stopped_early: bool


def resolve_device(spec: str | None) -> torch.device:
    """`None`/"auto" -> CUDA when available, else CPU; otherwise the named device, checked."""
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec!r}: CUDA is not available on this machine; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all CUDA devices too). Call before building a model."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def focal_loss(logits: Tensor, targets: Tensor, *, gamma: float, pos_weight: Tensor | None) -> Tensor:
    """Binary focal loss on logits (Lin et al. 2017): BCE down-weighted by (1 - p_t)^gamma."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    return ((1 - p_t).pow(gamma) * bce).mean()


def _resolve_pos_weight(cfg: TrainConfig, y_train: Tensor) -> float:
    if cfg.pos_weight != "auto":
        return float(cfg.pos_weight)
    n_pos = int((y_train == 1).sum())
    n_neg = int(y_train.numel()) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(
            f"config field 'pos_weight': 'auto' needs both classes in the training split "
            f"(found {n_neg} normal, {n_pos} anomalous windows)"
        )
    return n_neg / n_pos


def _make_loss(
    cfg: TrainConfig, *, autoencoder: bool, y_train: Tensor, device: torch.device
) -> Callable[[Tensor, Tensor], Tensor]:
    if autoencoder:
        return lambda recon, x: F.mse_loss(recon.float(), x.float())
    pos_weight = _resolve_pos_weight(cfg, y_train)
    weight = None if pos_weight == 1.0 else torch.tensor(pos_weight, device=device)
    if cfg.loss == "focal":
        return lambda logits, y: focal_loss(logits, y, gamma=cfg.focal_gamma, pos_weight=weight)
    return lambda logits, y: F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=weight)


def _make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay
        )
    fused = device.type == "cuda"  # one kernel per step instead of one per parameter
    optimizer_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def _make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE
        )
    return None


def fit(
    model: nn.Module,
    data: SplitData,
    cfg: TrainConfig,
    *,
    autoencoder: bool,
    device: torch.device | str = "cpu",
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Train `model` on `data` (normalised) and keep the weights of the best validation epoch.

    Classifiers train on every training window with BCE (or focal) loss. Autoencoders train on the
    normal training windows (y == 0) with reconstruction MSE; their anomaly score is the per-window
    reconstruction error, thresholded on the validation split each epoch.
    `on_epoch(epoch, scalar_metrics)` runs after every epoch (from 1); whatever it raises propagates.
    On return the model holds the best epoch's weights.
    """
    device = torch.device(device)
    seed_everything(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    amp = cfg.amp and device.type == "cuda"
    model.to(device)

    X_train, y_train = data.X_train.to(device), data.y_train.to(device).float()
    X_val, y_val = data.X_val.to(device), data.y_val.to(device).float()
    y_val_cpu = y_val.cpu()  # metrics are computed by scikit-learn on the host
    if autoencoder:
        # Autoencoders learn what normal looks like; anomalies are what they reconstruct badly.
        X_train = X_train[y_train == 0]
        y_train = y_train[y_train == 0]
        val_normal = y_val == 0
    n_train = X_train.shape[0]
    if n_train == 0:
        what = "normal (y == 0) " if autoencoder else ""
        raise ValueError(f"the training split has no {what}windows to train on")

    loss_fn = _make_loss(cfg, autoencoder=autoencoder, y_train=y_train, device=device)
    optimizer = _make_optimizer(model, cfg, device)
    scheduler = _make_scheduler(optimizer, cfg)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    eval_batch = eval_batch_size(device, cfg.batch_size)
    scorer = ScoringModel(model, autoencoder)
    threshold_metric = cfg.objective if cfg.objective in AE_THRESHOLD_OBJECTIVES else "f1_macro"

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_state: dict[str, Tensor] = {}
    epochs_since_best = 0
    stopped_early = False

    for epoch in range(1, cfg.epochs + 1):
        # ---- train one epoch ---------------------------------------------------------------
        epoch_start = time.perf_counter()
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        order = torch.randperm(n_train, device=device, generator=generator)
        loss_sum = torch.zeros((), device=device)
        first_bad_batch = torch.full((), -1, device=device, dtype=torch.long)
        n_batches = math.ceil(n_train / cfg.batch_size)
        for batch in range(n_batches):
            idx = order[batch * cfg.batch_size : (batch + 1) * cfg.batch_size]
            xb = X_train[idx]
            with autocast(device, amp):
                out = model(xb)
                if autoencoder:
                    loss = loss_fn(check_reconstruction(out, xb), xb)
                else:
                    loss = loss_fn(check_logits(out, xb.shape[0]), y_train[idx])
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            # Bookkeeping stays on the device; the host reads it back every NAN_CHECK_EVERY batches.
            loss = loss.detach()
            loss_sum += loss * idx.shape[0]
            newly_bad = ~torch.isfinite(loss) & (first_bad_batch < 0)
            first_bad_batch = torch.where(newly_bad, batch + 1, first_bad_batch)
            if (batch + 1) % NAN_CHECK_EVERY == 0 and int(first_bad_batch) >= 0:
                raise TrainingDiverged(epoch, int(first_bad_batch), "the training loss", cfg.lr)
        train_loss = float(loss_sum) / n_train  # the one host sync of the epoch
        if int(first_bad_batch) >= 0 or not math.isfinite(train_loss):
            bad = int(first_bad_batch)
            raise TrainingDiverged(epoch, bad if bad >= 0 else None, "the training loss", cfg.lr)
        train_seconds = time.perf_counter() - epoch_start

        # ---- validate ------------------------------------------------------------------------
        raw = score(scorer, X_val, batch_size=eval_batch, amp=amp, raw=True)
        if autoencoder:
            val_loss_t = raw[val_normal].mean() if bool(val_normal.any()) else raw.mean()
            scores = raw.cpu()
        else:
            val_loss_t = loss_fn(raw, y_val)
            scores = torch.sigmoid(raw).cpu()
        val_loss = float(val_loss_t)
        if not (math.isfinite(val_loss) and bool(torch.isfinite(scores).all())):
            raise TrainingDiverged(epoch, None, "the validation loss or outputs", cfg.lr)
        threshold = choose_threshold(scores, y_val_cpu, threshold_metric) if autoencoder else 0.5
        val_metrics = classification_metrics(y_val_cpu, scores, threshold)

        entry: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            **{f"val_{name}": value for name, value in val_metrics.items()},
            "threshold": threshold,
            "lr": lr,
            "epoch_seconds": time.perf_counter() - epoch_start,
            "samples_per_s": n_train / train_seconds,
        }
        history.append(entry)

        # ---- keep the best epoch (NaN, e.g. ROC-AUC of a one-class split, never beats a number)
        value = val_metrics[cfg.objective]
        improved = best is None or (not math.isnan(value) and (math.isnan(best["value"]) or value > best["value"]))
        if improved:
            best = {"epoch": epoch, "value": value, "entry": entry, "threshold": threshold}
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            epochs_since_best = 0
        else:
            epochs_since_best += 1

        if on_epoch is not None:
            on_epoch(epoch, {k: v for k, v in scalar_metrics(entry).items() if k != "epoch"})

        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(value)
        elif scheduler is not None:
            scheduler.step()

        if cfg.patience > 0 and epochs_since_best >= cfg.patience:
            stopped_early = epoch < cfg.epochs
            break

    assert best is not None  # epochs >= 1 is validated by TrainConfig
    model.load_state_dict(best_state)
    return FitResult(
        history=history,
        best_epoch=best["epoch"],
        best_value=best["value"],
        best_metrics=best["entry"],
        best_state=best_state,
        threshold=best["threshold"],
        stopped_early=stopped_early,
    )
