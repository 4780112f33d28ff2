"""Convolutional autoencoder: conv stack → 1×1 bottleneck → mirrored upsampling decoder → input's leads."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ecgmodels.blocks import ConvDecoder, ConvStack, crop_to_length, output_conv, pad_amount, pad_end
from ecgmodels.conditioning import InputConditioning
from ecgmodels.config import ConditioningParams, ConvStackParams, require_positive
from ecgmodels.registry import register


@dataclass(frozen=True, kw_only=True)
class CNNAEConfig(ConditioningParams, ConvStackParams):
    latent_channels: int = 16

    def _check(self) -> None:
        super()._check()
        require_positive("latent_channels", self.latent_channels)


@register("cnn_ae", CNNAEConfig, autoencoder=True)
class CNNAutoencoder(nn.Module):
    def __init__(self, config: CNNAEConfig, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        super().__init__()
        self.config, self.n_channels, self.seq_len, self.fs = config, n_channels, seq_len, fs
        self.conditioning = InputConditioning.from_config(config, fs=fs, seq_len=seq_len)
        # Padding to a multiple of all pools makes every pool exact, so the decoder returns that length.
        self.padding = pad_amount(seq_len, math.prod(config.pool_sizes))
        self.encoder = ConvStack.from_config(n_channels, config)
        self.bottleneck = nn.Conv1d(self.encoder.out_features, config.latent_channels, kernel_size=1)
        self.decoder = ConvDecoder.from_config(config.latent_channels, config)
        self.output = output_conv(self.decoder.out_features, n_channels, config.kernel_sizes[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conditioning.around(self.reconstruct, x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The network's reconstruction of an (already conditioned) window."""
        latent = self.bottleneck(self.encoder(pad_end(x, self.padding)))
        return crop_to_length(self.output(self.decoder(latent)), self.seq_len)
