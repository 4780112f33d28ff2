"""Search spaces by name, and the check that a sampled config builds a model of allowed size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

import ecgmodels
from spaces.common import SpaceContext, family_possible
from spaces.starting import starting_points

if TYPE_CHECKING:
    from torch import nn

SpaceFn = Callable[[optuna.Trial, SpaceContext], dict[str, Any]]


class UnknownSpace(ValueError):
    """A space name that is not registered; the message lists the valid ones."""

    exit_code = 2  # search.errors.EXIT_USAGE (spaces cannot import search)


@dataclass(frozen=True)
class SearchSpace:
    """A define-by-run space: `space(trial, ctx)` returns a flat config (family, model, training)."""

    name: str
    families: tuple[str, ...]
    sample: SpaceFn
    description: str

    def __call__(self, trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
        return self.sample(trial, ctx)

    def offered_families(self, ctx: SpaceContext) -> tuple[str, ...]:
        """The families this space samples for data described by `ctx`."""
        return tuple(family for family in self.families if family_possible(family, ctx))

    def starting_points(self, ctx: SpaceContext) -> list[tuple[str, dict[str, Any]]]:
        """(what it is, Optuna parameters) of the points a new study of this space starts from."""
        return starting_points(self.families, ctx)

    def check_context(self, ctx: SpaceContext) -> None:
        """Raises InvalidArchitecture when the space can sample nothing for this data (before a study starts)."""
        if not self.offered_families(ctx):
            raise ecgmodels.InvalidArchitecture(
                f"search space {self.name!r} needs the data's sampling rate and windows long enough for rhythm "
                f"features (at least two refractory periods); got fs={ctx.fs}, seq_len={ctx.seq_len}"
            )


_SPACES: dict[str, SearchSpace] = {}


def register(name: str, *, families: tuple[str, ...] | list[str]) -> Callable[[SpaceFn], SpaceFn]:
    """Decorator adding a space function under `name`; its docstring's first line describes it."""
    unknown = [family for family in families if family not in ecgmodels.FAMILIES]
    if unknown:
        raise ValueError(f"space {name!r} names unknown model families {unknown}; known: {ecgmodels.FAMILIES}")

    def decorator(function: SpaceFn) -> SpaceFn:
        if name in _SPACES:
            raise ValueError(f"search space {name!r} is already registered")
        description = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        _SPACES[name] = SearchSpace(name, tuple(families), function, description)
        return function

    return decorator


def get(name: str) -> SearchSpace:
    try:
        return _SPACES[name]
    except KeyError:
        raise UnknownSpace(f"unknown search space {name!r}; valid spaces: {', '.join(_SPACES)}") from None


def names() -> list[str]:
    return list(_SPACES)


def model_params(config: dict[str, Any]) -> dict[str, Any]:
    """The model parameters of the config's family (the rest is training settings)."""
    wanted = ecgmodels.model_param_names(config["family"])
    return {key: value for key, value in config.items() if key in wanted}


def build_model(
    config: dict[str, Any], *, n_channels: int, seq_len: int, fs: float | None = None, max_params: int | None = None
) -> tuple[nn.Module, int]:
    """Build the config's model for data sampled at `fs` Hz and count its parameters: the model a trial
    then trains, built once.

    Raises `ecgmodels.InvalidArchitecture` with the reason when the architecture cannot work or
    has more than `max_params` parameters, and ValueError for an unknown family.
    """
    if "family" not in config:
        raise ValueError(f"config has no 'family' key; expected one of {', '.join(ecgmodels.FAMILIES)}")
    model = ecgmodels.build(config["family"], n_channels=n_channels, seq_len=seq_len, fs=fs, **model_params(config))
    n_params = ecgmodels.count_params(model)
    if max_params is not None and n_params > max_params:
        raise ecgmodels.InvalidArchitecture(
            f"{config['family']} model has {n_params} parameters > max_params {max_params}"
        )
    return model, n_params


def validate_config(
    config: dict[str, Any], *, n_channels: int, seq_len: int, fs: float | None = None, max_params: int | None = None
) -> int:
    """The parameter count of the config's model; raises what `build_model` raises."""
    return build_model(config, n_channels=n_channels, seq_len=seq_len, fs=fs, max_params=max_params)[1]
