"""Input conditioning: fixed per-window transforms that remove what differs between patients.

Across patients the same rhythm arrives with other amplitudes, other baseline wander and other
lead placement, and some leads are missing (all zero). Two searched options, both off by default
(off, the module does nothing and has no state, so a model is exactly what it was without them):

- `remove_baseline`: subtract a centred moving average of about one second (BASELINE_SECONDS),
  a fixed filter built from `fs`. Computed as a difference of cumulative sums, so its cost does
  not grow with fs. Past the window's edges the signal is continued by its local trend line
  (through the medians of the two quarter seconds at each edge): zero padding would pull the
  baseline towards zero there, and reflect or replicate padding bend a sloping baseline back on
  itself (with wander of 1.3 units/s, reflect padding put the edge's baseline off by 0.30, the
  trend line by 0.02). Cumulative sums run on the window with its mean removed, which keeps
  float32 rounding far below the signal.
- `standardise_windows`: z-score each lead of each window over time,
  (x - mean) / sqrt(var + STANDARDISE_EPS²). An all-zero (missing) or constant lead stays zero;
  the epsilon, in the units of the normalised input (per-lead unit variance on the training
  set), also keeps a near-flat lead (electrode off) from being blown up into unit-variance noise.

Baseline removal runs first, so the z-scoring measures the spread of the beats, not of the wander.

Classifiers call the module on their input. Autoencoders call `around(reconstruct, x)`: the model
reconstructs the conditioned signal, and the reconstruction is mapped back with the window's own
saved statistics (times the scale, plus the mean and the baseline), so the output stays in the
input's space and the anomaly score (MSE between output and raw input) keeps its meaning: a
perfect inner reconstruction gives back exactly the input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional

BASELINE_SECONDS = 1.0
STANDARDISE_EPS = 1e-3


def baseline_half_width(fs: float) -> int:
    """Half the moving average's length in samples (the average spans 2·half + 1)."""
    return round(BASELINE_SECONDS * fs / 2)


class MovingAverageBaseline(nn.Module):
    """Centred moving average over the last axis; each edge's trend line continues past it.

    The trend line of an edge goes through the medians of the two halves of the edge's outermost
    `half_width` samples: medians, because a QRS complex near the edge would tilt a least-squares
    line (by 0.13 of the beat's height in the tests, against 0.03 with medians).
    """

    left_offsets: torch.Tensor
    right_offsets: torch.Tensor

    def __init__(self, *, half_width: int, seq_len: int) -> None:
        super().__init__()
        if half_width < 1 or seq_len < 2:
            raise ValueError(f"a baseline needs half_width >= 1 and seq_len >= 2, got {half_width} and {seq_len}")
        self.half_width = half_width
        self.part = min(max(half_width, 2), seq_len) // 2  # each edge fits its line on two parts this long
        # Positions of the padding relative to the middle of the fitted edge, in units of the
        # distance between the two parts' centres (the slope's run), so the line is mid + rise · offset.
        middle = self.part - 0.5
        left = (torch.arange(-half_width, 0, dtype=torch.float64) - middle) / self.part
        right = (torch.arange(2 * self.part, 2 * self.part + half_width, dtype=torch.float64) - middle) / self.part
        # Not persistent: functions of fs and seq_len, so state_dicts do not change with the option.
        self.register_buffer("left_offsets", left.float(), persistent=False)
        self.register_buffer("right_offsets", right.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = 2 * self.half_width + 1
        mean = x.mean(dim=-1, keepdim=True)
        centred = x - mean
        span = 2 * self.part
        # Both edges' two parts in one sort (one call instead of four: small sorts are call-bound).
        edges = torch.cat((centred[..., :span], centred[..., -span:]), dim=-1).unflatten(-1, (4, self.part))
        ordered = torch.sort(edges, dim=-1).values
        lower, upper = (self.part - 1) // 2, self.part // 2
        medians = 0.5 * (
            ordered[..., lower] + ordered[..., upper]
        )  # (..., 4): left outer, left inner, right inner, right outer
        left = self._line(medians[..., 0:1], medians[..., 1:2], self.left_offsets)
        right = self._line(medians[..., 2:3], medians[..., 3:4], self.right_offsets)
        padded = torch.cat((left, centred, right), dim=-1)
        sums = functional.pad(torch.cumsum(padded, dim=-1), (1, 0))
        return mean + (sums[..., width:] - sums[..., :-width]) / width

    @staticmethod
    def _line(first: torch.Tensor, second: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return 0.5 * (first + second) + (second - first) * offsets


class InputConditioning(nn.Module):
    """The conditioning a family's `ConditioningParams` ask for (identity when both are off)."""

    def __init__(self, *, standardise_windows: bool, remove_baseline: bool, fs: float | None, seq_len: int) -> None:
        super().__init__()
        self.standardise_windows = standardise_windows
        self.baseline: MovingAverageBaseline | None = None
        if remove_baseline:
            if fs is None:
                raise ValueError("remove_baseline needs the sampling rate fs")
            self.baseline = MovingAverageBaseline(half_width=baseline_half_width(fs), seq_len=seq_len)

    @classmethod
    def from_config(cls, config: Any, *, fs: float | None, seq_len: int) -> InputConditioning:
        return cls(
            standardise_windows=config.standardise_windows,
            remove_baseline=config.remove_baseline,
            fs=fs,
            seq_len=seq_len,
        )

    @property
    def active(self) -> bool:
        return self.standardise_windows or self.baseline is not None

    def condition(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(conditioned, offset, scale) with x == conditioned * scale + offset (None: 0 and 1)."""
        offset: torch.Tensor | None = None
        scale: torch.Tensor | None = None
        if self.baseline is not None:
            offset = self.baseline(x)
            x = x - offset
        if self.standardise_windows:
            mean = x.mean(dim=-1, keepdim=True)
            x = x - mean
            # sqrt(var + eps²), not std + eps: the same near 1, and a finite gradient at var = 0.
            scale = (x.pow(2).mean(dim=-1, keepdim=True) + STANDARDISE_EPS**2).sqrt()
            x = x / scale
            offset = mean if offset is None else offset + mean
        return x, offset, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return self.condition(x)[0]

    def around(self, reconstruct: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """`reconstruct` applied to the conditioned `x`, its output mapped back to x's space."""
        if not self.active:
            return reconstruct(x)
        conditioned, offset, scale = self.condition(x)
        output = reconstruct(conditioned)
        if scale is not None:
            output = output * scale
        if offset is not None:
            output = output + offset
        return output
