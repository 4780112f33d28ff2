"""Training losses: BCE or focal on classifier logits, MSE of an autoencoder's reconstruction."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from search.training.config import ConfigError, TrainConfig

LossFn = Callable[[Tensor, Tensor], Tensor]


def focal_loss(logits: Tensor, targets: Tensor, *, gamma: float, pos_weight: Tensor | None) -> Tensor:
    """Binary focal loss on logits (Lin et al. 2017): BCE down-weighted by (1 - p_t)^gamma."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    return ((1 - p_t).pow(gamma) * bce).mean()


def resolve_pos_weight(cfg: TrainConfig, y_train: Tensor) -> float:
    """`cfg.pos_weight`, or n_neg / n_pos of the training labels for "auto"."""
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


def make_loss(cfg: TrainConfig, *, autoencoder: bool, y_train: Tensor, device: torch.device) -> LossFn:
    """loss(output, target): (reconstruction, window) for autoencoders, (logits, labels) for classifiers."""
    if autoencoder:
        return lambda recon, x: F.mse_loss(recon.float(), x.float())
    pos_weight = resolve_pos_weight(cfg, y_train)
    weight = None if pos_weight == 1.0 else torch.tensor(pos_weight, device=device)
    if cfg.loss == "focal":
        return lambda logits, y: focal_loss(logits, y, gamma=cfg.focal_gamma, pos_weight=weight)
    return lambda logits, y: F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=weight)
