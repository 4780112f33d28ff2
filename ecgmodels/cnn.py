"""1-D CNN classifier: conv stack → flatten | average | max over time → FC head → one logit."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecgmodels.blocks import ConvStack, fc_head
from ecgmodels.config import CNN_HEADS, ConvStackParams, HeadParams, reduced_length
from ecgmodels.errors import InvalidArchitecture
from ecgmodels.registry import register


@dataclass(frozen=True, kw_only=True)
class CNNConfig(HeadParams, ConvStackParams):
    head: str = "avg"

    def _check(self) -> None:
        super()._check()
        if self.head not in CNN_HEADS:
            raise InvalidArchitecture(f"head must be one of {', '.join(CNN_HEADS)}, got {self.head!r}")


@register("cnn", CNNConfig, autoencoder=False)
class CNN(nn.Module):
    def __init__(self, config: CNNConfig, *, n_channels: int, seq_len: int) -> None:
        super().__init__()
        self.config, self.n_channels, self.seq_len = config, n_channels, seq_len
        self.features = ConvStack.from_config(n_channels, config)
        in_features = self.features.out_features
        if config.head == "flatten":
            in_features *= reduced_length(seq_len, config.pool_sizes)
        self.head = fc_head(in_features, config.fc_units, config.fc_dropout, config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        # Means and maxima over the time axis, not AdaptiveAvgPool: both export as single ONNX reductions.
        if self.config.head == "avg":
            pooled = features.mean(dim=-1)
        elif self.config.head == "max":
            pooled = features.amax(dim=-1)
        else:
            pooled = features.flatten(1)
        return self.head(pooled).squeeze(-1)
