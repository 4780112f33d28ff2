"""LSTM autoencoder on the (downsampled) raw signal.

average-pool → stacked LSTM encoder → latent vector → repeated per step → stacked LSTM decoder →
Linear to the leads → linear interpolation back to the exact input length. `bidirectional`
applies to the encoder; the decoder unrolls forward in time from the latent vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecgmodels.blocks import last_hidden, make_lstm
from ecgmodels.conditioning import InputConditioning
from ecgmodels.config import ConditioningParams, DownsampleParams, LSTMParams, require_positive
from ecgmodels.registry import register


@dataclass(frozen=True, kw_only=True)
class LSTMAEConfig(ConditioningParams, LSTMParams, DownsampleParams):
    bidirectional: bool = False
    latent_dim: int = 32

    def _check(self) -> None:
        super()._check()
        require_positive("latent_dim", self.latent_dim)


@register("lstm_ae", LSTMAEConfig, autoencoder=True)
class LSTMAutoencoder(nn.Module):
    def __init__(self, config: LSTMAEConfig, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        super().__init__()
        self.config, self.n_channels, self.seq_len, self.fs = config, n_channels, seq_len, fs
        self.conditioning = InputConditioning.from_config(config, fs=fs, seq_len=seq_len)
        self.steps = seq_len // config.downsample
        self.downsample = nn.AvgPool1d(config.downsample) if config.downsample > 1 else nn.Identity()
        self.lstm_encoder = make_lstm(
            n_channels, config.lstm_hidden, config.lstm_layers, config.lstm_dropout, config.bidirectional
        )
        directions = 2 if config.bidirectional else 1
        self.to_latent = nn.Linear(config.lstm_hidden * directions, config.latent_dim)
        self.lstm_decoder = make_lstm(
            config.latent_dim, config.lstm_hidden, config.lstm_layers, config.lstm_dropout, False
        )
        self.output = nn.Linear(config.lstm_hidden, n_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conditioning.around(self.reconstruct, x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The network's reconstruction of an (already conditioned) window."""
        _, (h_n, _) = self.lstm_encoder(self.downsample(x).transpose(1, 2))
        latent = self.to_latent(last_hidden(h_n, self.config.bidirectional))
        decoded, _ = self.lstm_decoder(latent.unsqueeze(1).repeat(1, self.steps, 1))
        reconstruction = self.output(decoded).transpose(1, 2)  # (batch, leads, steps)
        if self.steps == self.seq_len:
            return reconstruction
        return nn.functional.interpolate(reconstruction, size=self.seq_len, mode="linear", align_corners=False)
