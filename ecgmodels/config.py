"""Model configs: frozen dataclasses that type-check, normalise and validate their own fields.

A family's config combines the parameter groups it has (conv stack, LSTM, transformer, FC head,
raw-sequence downsampling, input conditioning, rhythm branch) by inheritance; each group checks its
own fields cooperatively through `_check` (input-independent rules) and `check_input` (rules that
depend on the data: leads, sequence length and sampling rate `fs`).
The sampling rate is a property of the data like the sequence length, never a config field: it
is passed to `check_input` (and to `build`), and options that need it refuse to work without it.

Flat-config keys of the input and rhythm options (all off by default; a config without them
builds exactly the model it built before they existed):
    standardise_windows: bool  every family      per-window, per-lead z-score (conditioning.py)
    remove_baseline: bool      every family      subtract a ~1 s moving average; needs fs
    rhythm_branch: bool        cnn, cnn_lstm,    rhythm features (rhythm.py) appended to the pooled
                               cnn_transformer,  representation before the FC head; needs fs
                               lstm
    rhythm_fusion: str         the same four     how the branch joins: "concat" (appended before the
                                                 FC head, the default) or "average" (a logistic
                                                 regression on the features, probabilities averaged
                                                 with the network's); used only with rhythm_branch
    rhythm_relative: bool      the same four     record-relative timing (rhythm.py): the rate features
                               and rhythm        over the patient's own median RR, a second model
                                                 input; needs rhythm_branch (or the rhythm family)
The `rhythm` family (rhythm features → BatchNorm → FC head) has fc_units, fc_dropout,
activation, rhythm_relative and the two conditioning keys, and always needs fs.
Values arrive from JSON as lists, from code as tuples: list fields are stored as tuples so a
config is hashable, and `to_dict()` gives lists back.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from ecgmodels.blocks import ACTIVATION_NAMES
from ecgmodels.conditioning import baseline_half_width
from ecgmodels.errors import InvalidArchitecture
from ecgmodels.rhythm import RHYTHM_FUSIONS, min_rhythm_seq_len

# Pooling below this many time steps leaves a sequence too short to carry any rhythm information.
MIN_REDUCED_LEN = 4

CNN_HEADS = ("flatten", "avg", "max")


def reduced_length(seq_len: int, pool_sizes: typing.Sequence[int]) -> int:
    """Sequence length after a conv stack whose layers max-pool (floor mode) by `pool_sizes`."""
    length = seq_len
    for pool in pool_sizes:
        length //= pool
    return length


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Checks one field against its annotation; returns the normalised value."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(item, int) and not isinstance(item, bool) for item in value
        ):
            raise InvalidArchitecture(f"{name} must be a list of integers, got {value!r}")
        return tuple(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise InvalidArchitecture(f"{name} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArchitecture(f"{name} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArchitecture(f"{name} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise InvalidArchitecture(f"{name} must be a string, got {value!r}")
        return value
    raise TypeError(f"config field {name} has an unsupported annotation {annotation!r}")


def require_positive(name: str, value: int) -> None:
    if value < 1:
        raise InvalidArchitecture(f"{name} must be >= 1, got {value}")


def require_positive_items(name: str, values: tuple[int, ...]) -> None:
    if not values:
        raise InvalidArchitecture(f"{name} must not be empty")
    for value in values:
        if value < 1:
            raise InvalidArchitecture(f"{name} entries must be >= 1, got {list(values)}")


def require_dropout(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:  # also refuses NaN
        raise InvalidArchitecture(f"{name} must be in [0, 1), got {value}")


def require_activation(name: str, value: str) -> None:
    if value not in ACTIVATION_NAMES:
        raise InvalidArchitecture(f"{name} must be one of {', '.join(ACTIVATION_NAMES)}, got {value!r}")


def check_fs(fs: Any) -> float | None:
    """The sampling rate as a float in Hz (None: unknown); anything else is refused."""
    if fs is None:
        return None
    if isinstance(fs, bool) or not isinstance(fs, (int, float)) or not math.isfinite(fs) or fs <= 0:
        raise InvalidArchitecture(f"fs must be a sampling rate in Hz (a number > 0) or None, got {fs!r}")
    return float(fs)


def require_fs(option: str, fs: float | None) -> float:
    if fs is None:
        raise InvalidArchitecture(
            f"{option} needs the sampling rate of the data: build the model with fs=<Hz> (e.g. fs=360.0 for MIT-BIH)"
        )
    return fs


def require_rhythm_input(option: str, fs: float | None, seq_len: int) -> None:
    """Rhythm features need the sampling rate and windows long enough to hold two beats."""
    shortest = min_rhythm_seq_len(require_fs(option, fs))
    if seq_len < shortest:
        raise InvalidArchitecture(
            f"{option} needs windows of at least {shortest} samples (two refractory periods at {fs:g} Hz), "
            f"got seq_len {seq_len}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Base of every family's config."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = _coerce(field.name, getattr(self, field.name), hints[field.name])
            object.__setattr__(self, field.name, value)
        self._check()

    def _check(self) -> None:
        """Input-independent rules; each parameter group extends this."""

    def check_input(self, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        """Rules that depend on the data; each parameter group extends this."""
        if isinstance(n_channels, bool) or not isinstance(n_channels, int) or n_channels < 1:
            raise InvalidArchitecture(f"n_channels must be an integer >= 1, got {n_channels!r}")
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise InvalidArchitecture(f"seq_len must be an integer >= 1, got {seq_len!r}")
        check_fs(fs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (lists, not tuples)."""
        return {
            field.name: list(value) if isinstance(value, tuple) else value
            for field in dataclasses.fields(self)
            for value in (getattr(self, field.name),)
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvStackParams(ModelConfig):
    out_channels: tuple[int, ...] = (16, 32, 64)
    kernel_sizes: tuple[int, ...] = (7, 5, 3)
    pool_sizes: tuple[int, ...] = (4, 2, 2)
    batch_norm: bool = True
    activation: str = "relu"
    conv_dropout: float = 0.1

    def _check(self) -> None:
        super()._check()
        require_positive_items("out_channels", self.out_channels)
        require_positive_items("kernel_sizes", self.kernel_sizes)
        require_positive_items("pool_sizes", self.pool_sizes)
        lengths = {len(self.out_channels), len(self.kernel_sizes), len(self.pool_sizes)}
        if len(lengths) > 1:
            raise InvalidArchitecture(
                "out_channels, kernel_sizes and pool_sizes must have one entry per conv layer, got "
                f"lengths {len(self.out_channels)}, {len(self.kernel_sizes)}, {len(self.pool_sizes)}"
            )
        even = [kernel for kernel in self.kernel_sizes if kernel % 2 == 0]
        if even:
            # An even kernel cannot pad symmetrically, so 'same' padding would shift the signal.
            raise InvalidArchitecture(f"kernel_sizes must be odd, got {list(self.kernel_sizes)}")
        require_activation("activation", self.activation)
        require_dropout("conv_dropout", self.conv_dropout)

    def check_input(self, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        super().check_input(n_channels=n_channels, seq_len=seq_len, fs=fs)
        reduced = reduced_length(seq_len, self.pool_sizes)
        if reduced < MIN_REDUCED_LEN:
            raise InvalidArchitecture(
                f"pool_sizes {list(self.pool_sizes)} shrink seq_len {seq_len} to {reduced} steps; "
                f"at least {MIN_REDUCED_LEN} are needed"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DownsampleParams(ModelConfig):
    """Average-pooling of the raw sequence before a recurrent layer (raw-sequence LSTMs)."""

    downsample: int = 8

    def _check(self) -> None:
        super()._check()
        require_positive("downsample", self.downsample)

    def check_input(self, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        super().check_input(n_channels=n_channels, seq_len=seq_len, fs=fs)
        reduced = seq_len // self.downsample
        if reduced < MIN_REDUCED_LEN:
            raise InvalidArchitecture(
                f"downsample {self.downsample} shrinks seq_len {seq_len} to {reduced} steps; "
                f"at least {MIN_REDUCED_LEN} are needed"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class LSTMParams(ModelConfig):
    lstm_hidden: int = 64
    lstm_layers: int = 1
    lstm_dropout: float = 0.0
    bidirectional: bool = True

    def _check(self) -> None:
        super()._check()
        require_positive("lstm_hidden", self.lstm_hidden)
        require_positive("lstm_layers", self.lstm_layers)
        require_dropout("lstm_dropout", self.lstm_dropout)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerParams(ModelConfig):
    d_model: int = 64
    nhead: int = 4
    tf_layers: int = 2
    dim_feedforward: int = 128
    tf_dropout: float = 0.1

    def _check(self) -> None:
        super()._check()
        for name in ("d_model", "nhead", "tf_layers", "dim_feedforward"):
            require_positive(name, getattr(self, name))
        if self.d_model % self.nhead:
            raise InvalidArchitecture(f"nhead {self.nhead} must divide d_model {self.d_model}")
        require_dropout("tf_dropout", self.tf_dropout)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadParams(ModelConfig):
    """The fully connected classifier head that ends in one logit."""

    fc_units: tuple[int, ...] = (64,)
    fc_dropout: float = 0.3

    def _check(self) -> None:
        super()._check()
        if any(units < 1 for units in self.fc_units):
            raise InvalidArchitecture(f"fc_units entries must be >= 1, got {list(self.fc_units)}")
        require_dropout("fc_dropout", self.fc_dropout)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConditioningParams(ModelConfig):
    """Per-window input conditioning (ecgmodels/conditioning.py), applied first in every family."""

    standardise_windows: bool = False
    remove_baseline: bool = False

    def check_input(self, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        super().check_input(n_channels=n_channels, seq_len=seq_len, fs=fs)
        if not self.remove_baseline:
            return
        if baseline_half_width(require_fs("remove_baseline", fs)) < 1:
            raise InvalidArchitecture(f"remove_baseline needs fs >= 3 Hz (a moving average of 3 samples), got {fs:g}")
        if seq_len < 2:
            raise InvalidArchitecture(f"remove_baseline needs windows of at least 2 samples, got seq_len {seq_len}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordRelativeParams(ModelConfig):
    """Whether rhythm features take the rate relative to the patient's own (a second model input)."""

    rhythm_relative: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class RhythmBranchParams(RecordRelativeParams):
    """A classifier's optional side input: the window's rhythm features beside its pooled features."""

    rhythm_branch: bool = False
    rhythm_fusion: str = "concat"

    def _check(self) -> None:
        super()._check()
        if self.rhythm_fusion not in RHYTHM_FUSIONS:
            raise InvalidArchitecture(
                f"rhythm_fusion must be one of {', '.join(RHYTHM_FUSIONS)}, got {self.rhythm_fusion!r}"
            )
        if self.rhythm_relative and not self.rhythm_branch:
            raise InvalidArchitecture("rhythm_relative needs rhythm_branch: it changes the branch's features")

    def check_input(self, *, n_channels: int, seq_len: int, fs: float | None = None) -> None:
        super().check_input(n_channels=n_channels, seq_len=seq_len, fs=fs)
        if self.rhythm_branch:
            require_rhythm_input("rhythm_branch", fs, seq_len)
