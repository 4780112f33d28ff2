"""ECG augmentation of training batches: vectorised over the batch, on the batch's device, seeded.

Every draw comes from the run's generator, so a run is reproducible; nothing is read back to the
host. Applied to training batches only: validation, the threshold sample and scoring see raw windows.
The order is shift, amplitude, wander, noise, then lead dropout, so a dropped lead is exactly zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from search.training.config import TrainConfig

# Baseline wander (breathing, electrode motion) lies below this frequency.
WANDER_MAX_HZ = 0.5
# Without a sampling rate, the wander's period is at least this fraction of the window.
WANDER_MIN_PERIOD_FRACTION = 0.5


def _uniform(shape: tuple[int, ...], low: float, high: float, like: Tensor, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def scale_amplitude(x: Tensor, amount: float, generator: torch.Generator) -> Tensor:
    """Each window's each lead times a factor uniform in [1 - amount, 1 + amount]."""
    return x * _uniform((x.shape[0], x.shape[1], 1), 1 - amount, 1 + amount, x, generator)


def shift_time(x: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Each window shifted by up to `fraction` of its length either way; the edge sample fills the gap."""
    length = x.shape[-1]
    most = round(fraction * length)
    if most == 0:
        return x
    shifts = torch.randint(-most, most + 1, (x.shape[0], 1), generator=generator, device=x.device)
    source = (torch.arange(length, device=x.device) - shifts).clamp_(0, length - 1)
    return x.gather(-1, source[:, None, :].expand_as(x))


def add_noise(x: Tensor, std: float, generator: torch.Generator) -> Tensor:
    """Gaussian noise of standard deviation `std` (in the normalised units the model sees)."""
    return x + torch.empty_like(x).normal_(0.0, std, generator=generator)


def add_baseline_wander(x: Tensor, amplitude: float, generator: torch.Generator, fs: float | None = None) -> Tensor:
    """A random slow sinusoid per window (frequency below 0.5 Hz, random phase), added to each lead with
    its own weight uniform in [-amplitude, amplitude]: one source (breathing, electrode motion) seen by
    every lead. Without `fs` the frequency is bounded by the window instead: a period of at least half of it.
    """
    batch, leads, length = x.shape
    max_cycles_per_sample = WANDER_MAX_HZ / fs if fs else 1.0 / (WANDER_MIN_PERIOD_FRACTION * length)
    frequency = _uniform((batch, 1, 1), 0.0, max_cycles_per_sample, x, generator)
    phase = _uniform((batch, 1, 1), 0.0, 2 * math.pi, x, generator)
    weight = _uniform((batch, leads, 1), -amplitude, amplitude, x, generator)
    t = torch.arange(length, device=x.device, dtype=x.dtype)
    return torch.addcmul(x, weight, torch.sin(2 * math.pi * frequency * t + phase))


def drop_lead(x: Tensor, probability: float, generator: torch.Generator) -> Tensor:
    """With `probability` per window, one lead of it (chosen at random) set to zero."""
    batch, leads, _ = x.shape
    dropped = torch.rand(batch, generator=generator, device=x.device) < probability
    lead = torch.randint(0, leads, (batch,), generator=generator, device=x.device)
    hit = (torch.arange(leads, device=x.device)[None, :] == lead[:, None]) & dropped[:, None]
    return x * (~hit)[:, :, None].to(x.dtype)


@dataclass(frozen=True)
class Augmentation:
    """The strengths of each augmentation (0 = off); `fs` is the sampling rate in Hz when known."""

    amplitude: float = 0.0
    shift: float = 0.0
    noise: float = 0.0
    wander: float = 0.0
    lead_dropout: float = 0.0
    fs: float | None = None

    @classmethod
    def from_config(cls, cfg: TrainConfig, fs: float | None = None) -> Augmentation:
        return cls(cfg.aug_amplitude, cfg.aug_shift, cfg.aug_noise, cfg.aug_wander, cfg.aug_lead_dropout, fs)

    @property
    def active(self) -> bool:
        return any((self.amplitude, self.shift, self.noise, self.wander, self.lead_dropout))

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """An augmented copy of the batch `x` (batch, leads, samples); `x` itself when all are off."""
        if self.shift:
            x = shift_time(x, self.shift, generator)
        if self.amplitude:
            x = scale_amplitude(x, self.amplitude, generator)
        if self.wander:
            x = add_baseline_wander(x, self.wander, generator, self.fs)
        if self.noise:
            x = add_noise(x, self.noise, generator)
        if self.lead_dropout:
            x = drop_lead(x, self.lead_dropout, generator)
        return x
