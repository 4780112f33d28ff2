"""Raw-sequence LSTM classifier: average-pool the signal → LSTM → final hidden state (+ rhythm) → FC → logit."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecgmodels.blocks import fc_head, last_hidden, make_lstm
from ecgmodels.conditioning import InputConditioning
from ecgmodels.config import ConditioningParams, DownsampleParams, HeadParams, LSTMParams, RhythmBranchParams
from ecgmodels.registry import register
from ecgmodels.rhythm import RhythmBranch


@dataclass(frozen=True, kw_only=True)
class LSTMConfig(RhythmBranchParams, ConditioningParams, HeadParams, LSTMParams, DownsampleParams):
    pass


@register("lstm", LSTMConfig, autoencoder=False)
class LSTMClassifier(nn.Module):
    def __init__(self, config: LSTMConfig, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        super().__init__()
        self.config, self.n_channels, self.seq_len, self.fs = config, n_channels, seq_len, fs
        self.conditioning = InputConditioning.from_config(config, fs=fs, seq_len=seq_len)
        # Thousands of raw steps make an LSTM slow and forgetful; averaging first keeps the rhythm.
        self.downsample = nn.AvgPool1d(config.downsample) if config.downsample > 1 else nn.Identity()
        self.lstm = make_lstm(
            n_channels, config.lstm_hidden, config.lstm_layers, config.lstm_dropout, config.bidirectional
        )
        directions = 2 if config.bidirectional else 1
        self.rhythm = RhythmBranch.from_config(config, fs=fs, seq_len=seq_len)
        in_features = config.lstm_hidden * directions + self.rhythm.out_features
        self.head = fc_head(in_features, config.fc_units, config.fc_dropout)

    def forward(self, x: torch.Tensor, record_rr: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conditioning(x)
        _, (h_n, _) = self.lstm(self.downsample(x).transpose(1, 2))
        pooled = last_hidden(h_n, self.config.bidirectional)
        return self.rhythm.head_logits(self.head, pooled, x, record_rr)
