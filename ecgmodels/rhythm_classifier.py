"""Rhythm classifier: the window's beat-timing features → per-feature BatchNorm → FC head → one logit.

The R-R interval features of `ecgmodels.rhythm` on their own: on unseen patients a logistic
regression on such features beat every searched CNN, so the search may choose it as a family
(`fc_units=[]` is that logistic regression on standardised features). Needs the sampling rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecgmodels.blocks import fc_head
from ecgmodels.conditioning import InputConditioning
from ecgmodels.config import (
    ConditioningParams,
    HeadParams,
    RecordRelativeParams,
    require_activation,
    require_rhythm_input,
)
from ecgmodels.registry import register
from ecgmodels.rhythm import FEATURE_NAMES, RhythmBranch


@dataclass(frozen=True, kw_only=True)
class RhythmConfig(RecordRelativeParams, ConditioningParams, HeadParams):
    activation: str = "relu"

    def _check(self) -> None:
        super()._check()
        require_activation("activation", self.activation)

    def check_input(self, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        super().check_input(n_channels=n_channels, seq_len=seq_len, fs=fs)
        require_rhythm_input("the rhythm family", fs, seq_len)


@register("rhythm", RhythmConfig, autoencoder=False)
class RhythmClassifier(nn.Module):
    def __init__(self, config: RhythmConfig, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        super().__init__()
        self.config, self.n_channels, self.seq_len, self.fs = config, n_channels, seq_len, fs
        self.conditioning = InputConditioning.from_config(config, fs=fs, seq_len=seq_len)
        self.rhythm = RhythmBranch(fs=fs, seq_len=seq_len, relative=config.rhythm_relative)
        self.head = fc_head(len(FEATURE_NAMES), config.fc_units, config.fc_dropout, config.activation)

    def forward(self, x: torch.Tensor, record_rr: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.rhythm(self.conditioning(x), record_rr)).squeeze(-1)
