"""CNN-Transformer classifier: conv stack → projection → positional code → encoder → mean (+ rhythm) → FC."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecgmodels.blocks import ConvStack, SinusoidalPositionalEncoding, fc_head
from ecgmodels.conditioning import InputConditioning
from ecgmodels.config import (
    ConditioningParams,
    ConvStackParams,
    HeadParams,
    RhythmBranchParams,
    TransformerParams,
    reduced_length,
)
from ecgmodels.registry import register
from ecgmodels.rhythm import RhythmBranch


@dataclass(frozen=True, kw_only=True)
class CNNTransformerConfig(RhythmBranchParams, ConditioningParams, HeadParams, TransformerParams, ConvStackParams):
    pass


@register("cnn_transformer", CNNTransformerConfig, autoencoder=False)
class CNNTransformer(nn.Module):
    def __init__(self, config: CNNTransformerConfig, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        super().__init__()
        self.config, self.n_channels, self.seq_len, self.fs = config, n_channels, seq_len, fs
        self.conditioning = InputConditioning.from_config(config, fs=fs, seq_len=seq_len)
        self.features = ConvStack.from_config(n_channels, config)
        self.project = nn.Linear(self.features.out_features, config.d_model)
        steps = reduced_length(seq_len, config.pool_sizes)
        self.position = SinusoidalPositionalEncoding(config.d_model, max_len=steps)
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.nhead,
            dim_feedforward=config.dim_feedforward,
            dropout=config.tf_dropout,
            batch_first=True,
        )
        # Nested tensors only pay off with padding masks, which fixed-length ECG windows never have.
        self.encoder = nn.TransformerEncoder(layer, config.tf_layers, enable_nested_tensor=False)
        self.rhythm = RhythmBranch.from_config(config, fs=fs, seq_len=seq_len)
        in_features = config.d_model + self.rhythm.out_features
        self.head = fc_head(in_features, config.fc_units, config.fc_dropout, config.activation)

    def forward(self, x: torch.Tensor, record_rr: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conditioning(x)
        steps = self.project(self.features(x).transpose(1, 2))  # (batch, steps, d_model)
        encoded = self.encoder(self.position(steps))
        return self.rhythm.head_logits(self.head, encoded.mean(dim=1), x, record_rr)
