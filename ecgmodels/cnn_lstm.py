"""CNN-LSTM classifier: conv stack → LSTM over the pooled time steps → final hidden state → FC → logit."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecgmodels.blocks import ConvStack, fc_head, last_hidden, make_lstm
from ecgmodels.config import ConvStackParams, HeadParams, LSTMParams
from ecgmodels.registry import register


@dataclass(frozen=True, kw_only=True)
class CNNLSTMConfig(HeadParams, LSTMParams, ConvStackParams):
    pass


@register("cnn_lstm", CNNLSTMConfig, autoencoder=False)
class CNNLSTM(nn.Module):
    def __init__(self, config: CNNLSTMConfig, *, n_channels: int, seq_len: int) -> None:
        super().__init__()
        self.config, self.n_channels, self.seq_len = config, n_channels, seq_len
        self.features = ConvStack.from_config(n_channels, config)
        self.lstm = make_lstm(
            self.features.out_features,
            config.lstm_hidden,
            config.lstm_layers,
            config.lstm_dropout,
            config.bidirectional,
        )
        directions = 2 if config.bidirectional else 1
        self.head = fc_head(config.lstm_hidden * directions, config.fc_units, config.fc_dropout, config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.features(x).transpose(1, 2)  # (batch, steps, channels)
        _, (h_n, _) = self.lstm(steps)
        return self.head(last_hidden(h_n, self.config.bidirectional)).squeeze(-1)
