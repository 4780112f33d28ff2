"""The training part of a trial's flat config (`TrainConfig`), and splitting/joining the flat dict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from search.errors import EXIT_USAGE, EcgSearchError
from search.training.curve import SELECTION_RULES
from search.training.metrics import OBJECTIVES

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "plateau", "cosine")
LOSSES = ("bce", "focal")


class ConfigError(EcgSearchError, ValueError):
    """A config value cannot work; the message names the field, the value and what was expected."""

    exit_code = EXIT_USAGE


def _field_error(name: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config field {name!r}: got {value!r}, expected {expected}")


@dataclass
class TrainConfig:
    """Everything `search.training.loop.fit` needs besides the model and the data."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    scheduler: str = "none"
    grad_clip: float = 0.0  # 0 = off
    loss: str = "bce"  # classifiers only; autoencoders always train on reconstruction MSE
    pos_weight: float | str = 1.0  # or "auto": n_neg / n_pos of the training split
    focal_gamma: float = 2.0
    patience: int = 0  # 0 = no early stopping
    objective: str = "roc_auc"
    seed: int = 0
    amp: bool = True  # bf16 autocast, on CUDA only
    # How the validation curve becomes the trial's value and which epoch's weights are kept (see curve.py).
    selection: str = "smoothed"
    selection_window: int = 3  # epochs in the trailing mean of "smoothed"
    # Training-time augmentation strengths (see augment.py); 0 = off.
    aug_amplitude: float = 0.0  # per window and lead, a factor uniform in [1 - a, 1 + a]
    aug_shift: float = 0.0  # time shift up to this fraction of the window, either way
    aug_noise: float = 0.0  # Gaussian noise std, in normalised units
    aug_wander: float = 0.0  # baseline wander: one slow sinusoid per window, weighted per lead by up to ±w
    aug_lead_dropout: float = 0.0  # probability per window of zeroing one random lead

    def __post_init__(self) -> None:
        self._check_int("epochs", minimum=1)
        self._check_int("batch_size", minimum=1)
        self._check_choice("optimizer", OPTIMIZERS)
        self._check_float("lr", minimum=0.0, inclusive=False)
        self._check_float("weight_decay", minimum=0.0)
        self._check_float("momentum", minimum=0.0)
        if self.momentum >= 1.0:
            raise _field_error("momentum", self.momentum, "a number in [0, 1)")
        self._check_choice("scheduler", SCHEDULERS)
        self._check_float("grad_clip", minimum=0.0)
        self._check_choice("loss", LOSSES)
        if self.pos_weight != "auto":
            if isinstance(self.pos_weight, str):
                raise _field_error("pos_weight", self.pos_weight, 'a positive number or "auto"')
            self._check_float("pos_weight", minimum=0.0, inclusive=False, also='or "auto"')
        self._check_float("focal_gamma", minimum=0.0)
        self._check_int("patience", minimum=0)
        self._check_choice("objective", tuple(OBJECTIVES))
        self._check_int("seed", minimum=0)
        if not isinstance(self.amp, bool):
            raise _field_error("amp", self.amp, "true or false")
        self._check_choice("selection", SELECTION_RULES)
        self._check_int("selection_window", minimum=1)
        self._check_float("aug_amplitude", minimum=0.0, below=1.0)
        self._check_float("aug_shift", minimum=0.0, at_most=0.5)
        self._check_float("aug_noise", minimum=0.0)
        self._check_float("aug_wander", minimum=0.0)
        self._check_float("aug_lead_dropout", minimum=0.0, at_most=1.0)

    def _check_int(self, name: str, *, minimum: int) -> None:
        value = getattr(self, name)
        # bool is an int subclass; `epochs: true` in a YAML file is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _field_error(name, value, f"an integer >= {minimum}")

    def _check_float(
        self,
        name: str,
        *,
        minimum: float,
        inclusive: bool = True,
        below: float | None = None,
        at_most: float | None = None,
        also: str = "",
    ) -> None:
        value = getattr(self, name)
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        if below is not None:
            bound += f" and < {below:g}"
        if at_most is not None:
            bound += f" and <= {at_most:g}"
        expected = f"a finite number {bound}" + (f" {also}" if also else "")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _field_error(name, value, expected)
        value = float(value)
        too_low = value < minimum or (not inclusive and value == minimum)
        too_high = (below is not None and value >= below) or (at_most is not None and value > at_most)
        if not math.isfinite(value) or too_low or too_high:
            raise _field_error(name, value, expected)
        setattr(self, name, value)  # JSON/YAML give ints for whole numbers; keep the field a float

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise _field_error(name, value, "one of " + ", ".join(choices))


TRAIN_FIELDS: frozenset[str] = frozenset(f.name for f in fields(TrainConfig))


def split_config(config: dict[str, Any]) -> tuple[str, dict[str, Any], TrainConfig]:
    """Separate a flat trial config into (family, model parameters, TrainConfig).

    Keys that are neither a model parameter of the family nor a TrainConfig field are refused,
    so a typo never silently falls back to a default.
    """
    import ecgmodels  # search may import ecgmodels; kept local so `search.config` loads without torch

    if "family" not in config:
        raise ConfigError("config has no 'family' key; expected one of " + ", ".join(ecgmodels.FAMILIES))
    family = config["family"]
    if family not in ecgmodels.FAMILIES:
        raise _field_error("family", family, "one of " + ", ".join(ecgmodels.FAMILIES))
    model_names = ecgmodels.model_param_names(family)
    clashes = model_names & TRAIN_FIELDS
    if clashes:  # a contract violation in ecgmodels, not a user error: fail loudly
        raise RuntimeError(f"model parameters of {family!r} clash with training fields: {sorted(clashes)}")
    model_params: dict[str, Any] = {}
    train_params: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in config.items():
        if key == "family":
            continue
        if key in model_names:
            model_params[key] = value
        elif key in TRAIN_FIELDS:
            train_params[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(map(repr, sorted(unknown)))} for family {family!r}; "
            f"expected a model parameter ({', '.join(sorted(model_names))}) "
            f"or a training field ({', '.join(sorted(TRAIN_FIELDS))})"
        )
    return family, model_params, TrainConfig(**train_params)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def join_config(family: str, model_params: dict[str, Any], train_cfg: TrainConfig) -> dict[str, Any]:
    """The flat, JSON-serialisable config: the inverse of `split_config`."""
    flat: dict[str, Any] = {"family": family}
    flat.update({k: _jsonable(v) for k, v in model_params.items()})
    flat.update(asdict(train_cfg))
    return flat
