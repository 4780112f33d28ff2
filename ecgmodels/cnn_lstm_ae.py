"""CNN-LSTM autoencoder: conv stack → LSTM encoder → latent vector → repeated → LSTM decoder → conv decoder.

`bidirectional` applies to the encoder; the decoder unrolls forward in time from the latent vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ecgmodels.blocks import (
    ConvDecoder,
    ConvStack,
    crop_to_length,
    last_hidden,
    make_lstm,
    output_conv,
    pad_amount,
    pad_end,
)
from ecgmodels.conditioning import InputConditioning
from ecgmodels.config import ConditioningParams, ConvStackParams, LSTMParams, reduced_length, require_positive
from ecgmodels.registry import register


@dataclass(frozen=True, kw_only=True)
class CNNLSTMAEConfig(ConditioningParams, LSTMParams, ConvStackParams):
    lstm_hidden: int = 32
    latent_dim: int = 32

    def _check(self) -> None:
        super()._check()
        require_positive("latent_dim", self.latent_dim)


@register("cnn_lstm_ae", CNNLSTMAEConfig, autoencoder=True)
class CNNLSTMAutoencoder(nn.Module):
    def __init__(self, config: CNNLSTMAEConfig, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        super().__init__()
        self.config, self.n_channels, self.seq_len, self.fs = config, n_channels, seq_len, fs
        self.conditioning = InputConditioning.from_config(config, fs=fs, seq_len=seq_len)
        self.padding = pad_amount(seq_len, math.prod(config.pool_sizes))
        self.steps = reduced_length(seq_len + self.padding, config.pool_sizes)
        self.encoder = ConvStack.from_config(n_channels, config)
        self.lstm_encoder = make_lstm(
            self.encoder.out_features,
            config.lstm_hidden,
            config.lstm_layers,
            config.lstm_dropout,
            config.bidirectional,
        )
        directions = 2 if config.bidirectional else 1
        self.to_latent = nn.Linear(config.lstm_hidden * directions, config.latent_dim)
        self.lstm_decoder = make_lstm(
            config.latent_dim, config.lstm_hidden, config.lstm_layers, config.lstm_dropout, False
        )
        self.decoder = ConvDecoder.from_config(config.lstm_hidden, config)
        self.output = output_conv(self.decoder.out_features, n_channels, config.kernel_sizes[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conditioning.around(self.reconstruct, x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The network's reconstruction of an (already conditioned) window."""
        steps = self.encoder(pad_end(x, self.padding)).transpose(1, 2)  # (batch, steps, channels)
        _, (h_n, _) = self.lstm_encoder(steps)
        latent = self.to_latent(last_hidden(h_n, self.config.bidirectional))
        decoded, _ = self.lstm_decoder(latent.unsqueeze(1).repeat(1, self.steps, 1))
        reconstruction = self.output(self.decoder(decoded.transpose(1, 2)))
        return crop_to_length(reconstruction, self.seq_len)
