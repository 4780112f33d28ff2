"""Search spaces: `trial -> flat config`, one per model family plus spaces that choose the family.

    space = spaces.get("cnn_lstm")
    config = space(trial, spaces.SpaceContext(n_channels=2, seq_len=2000, fs=360.0))
    n_params = spaces.validate_config(config, n_channels=2, seq_len=2000, fs=360.0, max_params=500_000)

Imports optuna and ecgmodels only.
"""

from spaces import families as _families  # noqa: F401  (registers the spaces)
from spaces.common import SpaceContext, suggest_conv_stack, suggest_training
from spaces.registry import (
    SearchSpace,
    UnknownSpace,
    build_model,
    get,
    model_params,
    names,
    register,
    validate_config,
)

__all__ = [
    "SearchSpace",
    "SpaceContext",
    "UnknownSpace",
    "build_model",
    "get",
    "model_params",
    "names",
    "register",
    "suggest_conv_stack",
    "suggest_training",
    "validate_config",
]
