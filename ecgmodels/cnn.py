"""1-D CNN classifier: conv stack → flatten | average | max over time (+ rhythm features) → FC head → logit."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecgmodels.blocks import ConvStack, fc_head
from ecgmodels.conditioning import InputConditioning
from ecgmodels.config import (
    CNN_HEADS,
    ConditioningParams,
    ConvStackParams,
    HeadParams,
    RhythmBranchParams,
    reduced_length,
)
from ecgmodels.errors import InvalidArchitecture
from ecgmodels.registry import register
from ecgmodels.rhythm import RhythmBranch


@dataclass(frozen=True, kw_only=True)
class CNNConfig(RhythmBranchParams, ConditioningParams, HeadParams, ConvStackParams):
    head: str = "avg"

    def _check(self) -> None:
        super()._check()
        if self.head not in CNN_HEADS:
            raise InvalidArchitecture(f"head must be one of {', '.join(CNN_HEADS)}, got {self.head!r}")


@register("cnn", CNNConfig, autoencoder=False)
class CNN(nn.Module):
    def __init__(self, config: CNNConfig, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        super().__init__()
        self.config, self.n_channels, self.seq_len, self.fs = config, n_channels, seq_len, fs
        self.conditioning = InputConditioning.from_config(config, fs=fs, seq_len=seq_len)
        self.features = ConvStack.from_config(n_channels, config)
        in_features = self.features.out_features
        if config.head == "flatten":
            in_features *= reduced_length(seq_len, config.pool_sizes)
        self.rhythm = RhythmBranch.from_config(config, fs=fs, seq_len=seq_len)
        in_features += self.rhythm.out_features
        self.head = fc_head(in_features, config.fc_units, config.fc_dropout, config.activation)

    def forward(self, x: torch.Tensor, record_rr: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conditioning(x)
        features = self.features(x)
        # Means and maxima over the time axis, not AdaptiveAvgPool: both export as single ONNX reductions.
        if self.config.head == "avg":
            pooled = features.mean(dim=-1)
        elif self.config.head == "max":
            pooled = features.amax(dim=-1)
        else:
            pooled = features.flatten(1)
        return self.rhythm.head_logits(self.head, pooled, x, record_rr)
