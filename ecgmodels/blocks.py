"""Building blocks shared by the model families (kept here once, not per family)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ecgmodels.errors import InvalidArchitecture

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}
ACTIVATION_NAMES = tuple(_ACTIVATIONS)


def make_activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise InvalidArchitecture(f"activation must be one of {', '.join(_ACTIVATIONS)}, got {name!r}") from None


def _conv_same(in_channels: int, out_channels: int, kernel_size: int, *, bias: bool) -> nn.Conv1d:
    # Equal to padding='same' for the odd kernels configs allow, and exports to every ONNX opset.
    return nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def _conv_block(
    in_channels: int, out_channels: int, kernel_size: int, batch_norm: bool, activation: str, dropout: float
) -> list[nn.Module]:
    # A bias before BatchNorm is cancelled by its mean subtraction.
    layers: list[nn.Module] = [_conv_same(in_channels, out_channels, kernel_size, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(out_channels))
    layers.append(make_activation(activation))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


class ConvStack(nn.Sequential):
    """N × [Conv1d 'same' → BatchNorm1d (optional) → activation → Dropout → MaxPool1d(pool) if pool > 1]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: Sequence[int],
        kernel_sizes: Sequence[int],
        pool_sizes: Sequence[int],
        *,
        batch_norm: bool,
        activation: str,
        dropout: float,
    ) -> None:
        layers: list[nn.Module] = []
        channels = in_channels
        for width, kernel, pool in zip(out_channels, kernel_sizes, pool_sizes, strict=True):
            layers += _conv_block(channels, width, kernel, batch_norm, activation, dropout)
            if pool > 1:
                layers.append(nn.MaxPool1d(pool))
            channels = width
        super().__init__(*layers)
        self.out_features = channels

    @classmethod
    def from_config(cls, in_channels: int, config: Any) -> ConvStack:
        """The stack a family's `ConvStackParams` describe (every conv family builds it the same way)."""
        return cls(
            in_channels,
            config.out_channels,
            config.kernel_sizes,
            config.pool_sizes,
            batch_norm=config.batch_norm,
            activation=config.activation,
            dropout=config.conv_dropout,
        )


class ConvDecoder(nn.Sequential):
    """Mirror of a ConvStack: per layer, last first, nearest upsampling by its pool then a conv block.

    Takes the encoder's layer lists in encoder order; ends with `out_channels[0]` channels at the
    encoder's input length (when that length is a multiple of the product of the pools).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: Sequence[int],
        kernel_sizes: Sequence[int],
        pool_sizes: Sequence[int],
        *,
        batch_norm: bool,
        activation: str,
        dropout: float,
    ) -> None:
        layers: list[nn.Module] = []
        channels = in_channels
        stages = list(zip(out_channels, kernel_sizes, pool_sizes, strict=True))
        for width, kernel, pool in reversed(stages):
            if pool > 1:
                layers.append(nn.Upsample(scale_factor=pool, mode="nearest"))
            layers += _conv_block(channels, width, kernel, batch_norm, activation, dropout)
            channels = width
        super().__init__(*layers)
        self.out_features = channels

    @classmethod
    def from_config(cls, in_channels: int, config: Any) -> ConvDecoder:
        """The decoder mirroring `ConvStack.from_config(…, config)`, starting from `in_channels`."""
        return cls(
            in_channels,
            config.out_channels,
            config.kernel_sizes,
            config.pool_sizes,
            batch_norm=config.batch_norm,
            activation=config.activation,
            dropout=config.conv_dropout,
        )


def output_conv(in_channels: int, n_channels: int, kernel_size: int) -> nn.Conv1d:
    """The last layer of a conv decoder: back to the input's leads, linear (no activation)."""
    return _conv_same(in_channels, n_channels, kernel_size, bias=True)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sine/cosine position code of 'Attention is all you need' to (batch, steps, d_model)."""

    pe: torch.Tensor

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        # An odd d_model gets one more sine than cosine column: compute for the even size, then trim.
        even = d_model + d_model % 2
        div_term = torch.exp(torch.arange(0, even, 2, dtype=torch.float32) * (-math.log(10000.0) / even))
        pe = torch.zeros(max_len, even)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        # Not persistent: it is a function of the shape, so state_dicts stay independent of max_len.
        self.register_buffer("pe", pe[:, :d_model].unsqueeze(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.size(1)]


def fc_head(in_features: int, fc_units: Sequence[int], dropout: float, activation: str = "relu") -> nn.Sequential:
    """[Linear → activation → Dropout] per entry of `fc_units`, then Linear to one logit."""
    layers: list[nn.Module] = []
    features = in_features
    for units in fc_units:
        layers += [nn.Linear(features, units), make_activation(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        features = units
    layers.append(nn.Linear(features, 1))
    return nn.Sequential(*layers)


def last_hidden(h_n: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """The top layer's final hidden state from an LSTM's h_n, both directions concatenated.

    For the backward direction this is the state after reading the whole sequence, which
    output[:, -1] is not (there it has read only the last step).
    """
    if bidirectional:
        return torch.cat((h_n[-2], h_n[-1]), dim=-1)
    return h_n[-1]


def make_lstm(input_size: int, hidden: int, layers: int, dropout: float, bidirectional: bool) -> nn.LSTM:
    # torch applies LSTM dropout only between layers and warns when asked for it with one layer.
    return nn.LSTM(
        input_size,
        hidden,
        num_layers=layers,
        dropout=dropout if layers > 1 else 0.0,
        bidirectional=bidirectional,
        batch_first=True,
    )


def pad_amount(length: int, multiple: int) -> int:
    """How many samples to append so that `length` becomes a multiple of `multiple`."""
    return -length % multiple


def pad_end(x: torch.Tensor, amount: int) -> torch.Tensor:
    """Zero-pads the last axis by `amount` samples (a build-time constant, so traces stay static)."""
    if amount == 0:
        return x
    return nn.functional.pad(x, (0, amount))


def crop_to_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Keeps the first `length` samples of the last axis."""
    return x[..., :length]
