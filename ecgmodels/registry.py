"""timm-style registry: families register their module class and config; `build` makes a model.

A family's module class is constructed as `cls(config, n_channels=..., seq_len=..., fs=...)` with a
validated config instance, and keeps all four as attributes (`model.config.to_dict()` gives the
model parameters back as JSON-ready values; `fs`, the sampling rate in Hz or None, belongs to the
data like `seq_len` and is not one of them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from ecgmodels.config import ModelConfig, check_fs

ModuleT = TypeVar("ModuleT", bound=type[nn.Module])


@dataclass(frozen=True)
class Family:
    name: str
    module_cls: type[nn.Module]
    config_cls: type[ModelConfig]
    autoencoder: bool


_FAMILIES: dict[str, Family] = {}


def register(name: str, config_cls: type[ModelConfig], *, autoencoder: bool) -> Callable[[ModuleT], ModuleT]:
    """Class decorator adding a model family under `name`."""

    def decorator(module_cls: ModuleT) -> ModuleT:
        if name in _FAMILIES:
            raise ValueError(f"model family {name!r} is already registered")
        _FAMILIES[name] = Family(name, module_cls, config_cls, autoencoder)
        return module_cls

    return decorator


def _family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; valid families: {', '.join(list_models())}") from None


def list_models() -> list[str]:
    """Registered family names: classifiers first, then autoencoders, each alphabetically."""
    return sorted(_FAMILIES, key=lambda name: (_FAMILIES[name].autoencoder, name))


def is_autoencoder(family: str) -> bool:
    return _family(family).autoencoder


def model_param_names(family: str) -> frozenset[str]:
    return frozenset(field.name for field in dataclasses.fields(_family(family).config_cls))


def default_params(family: str) -> dict[str, Any]:
    """The family's default model parameters, JSON-serialisable (lists, not tuples)."""
    return _family(family).config_cls().to_dict()


def make_config(family: str, *, n_channels: int, seq_len: int, fs: float | None = None, **params: Any) -> ModelConfig:
    """Validated config for `family` and this input; raises what `build` raises, builds nothing.

    `fs` is the data's sampling rate in Hz; options that need it (baseline removal, rhythm
    features) raise InvalidArchitecture without it.
    """
    entry = _family(family)
    names = model_param_names(family)
    unknown = sorted(set(params) - names)
    if unknown:
        raise ValueError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for model family {family!r}; its parameters: {', '.join(sorted(names))}"
        )
    config = entry.config_cls(**params)
    config.check_input(n_channels=n_channels, seq_len=seq_len, fs=fs)
    return config


def build(family: str, *, n_channels: int, seq_len: int, fs: float | None = None, **params: Any) -> nn.Module:
    """A freshly initialised model of `family` for inputs (batch, n_channels, seq_len) sampled at `fs` Hz."""
    config = make_config(family, n_channels=n_channels, seq_len=seq_len, fs=fs, **params)
    return _family(family).module_cls(config, n_channels=n_channels, seq_len=seq_len, fs=check_fs(fs))


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
