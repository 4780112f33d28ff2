"""Toy problems for the training tests: learnable in a few epochs by tiny models, with exact assertions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from search.training.config import TrainConfig
from search.training.device import seed_everything

CHANNELS, LENGTH = 2, 32


@dataclass
class ToyData:
    """Just the six tensors `fit` needs, shaped like an ECGDataset."""

    X_train: Tensor
    y_train: Tensor
    X_val: Tensor
    y_val: Tensor
    X_test: Tensor
    y_test: Tensor


def make_toy_data(n_train: int = 256, n_val: int = 96, n_test: int = 64, seed: int = 0) -> ToyData:
    """Anomalies carry a bump in lead 0: learnable by a tiny conv net in a few epochs."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[Tensor, Tensor]:
        y = (torch.rand(n, generator=g) < 0.3).float()
        y[:2] = torch.tensor([0.0, 1.0])  # both classes in every split
        X = torch.randn(n, CHANNELS, LENGTH, generator=g) * 0.5
        X[:, 0, 8:24] += 1.5 * y[:, None]
        return X, y

    return ToyData(*split(n_train), *split(n_val), *split(n_test))


class TinyClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(CHANNELS, 4, kernel_size=5, padding=2)
        self.fc = nn.Linear(4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=-1)).squeeze(-1)


class TinyAutoencoder(nn.Module):
    """Squeezes each window through 4 numbers: normals (noise) reconstruct, bumps do not."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Linear(CHANNELS * LENGTH, 4)
        self.decode = nn.Linear(4, CHANNELS * LENGTH)
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.seen.append(x.detach().clone())
        return self.decode(self.encode(x.flatten(1))).view_as(x)


class NaNAfter(nn.Module):
    """Emits NaN logits from the n-th training forward pass on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.inner = TinyClassifier()
        self.after, self.calls = after, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += self.training
        out = self.inner(x)
        return out * float("nan") if self.calls >= self.after else out


def quick(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 32, "lr": 1e-2, **overrides})


def fresh_classifier(seed: int = 0) -> TinyClassifier:
    seed_everything(seed)
    return TinyClassifier()


class DropoutClassifier(TinyClassifier):
    """Draws dropout masks from torch's global RNG, which runs advanced in lockstep must not share."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(torch.relu(self.conv(x)).mean(dim=-1))).squeeze(-1)


class EnergyAutoencoder(nn.Module):
    """Reconstructs every window as one learned level: for zero-mean windows (`energy_windows`), a window's
    reconstruction error is its energy, whatever the level learns."""

    def __init__(self) -> None:
        super().__init__()
        self.level = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.level.expand_as(x)


def energy_windows(energies: Tensor) -> Tensor:
    """Windows of alternating +/- sqrt(energy): mean 0, mean square `energy`."""
    signs = torch.ones(CHANNELS, LENGTH)
    signs[:, 1::2] = -1.0
    return energies.sqrt()[:, None, None] * signs
