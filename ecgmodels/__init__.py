"""ECG model families as plain `nn.Module`s behind a timm-style registry (imports torch only).

    model = ecgmodels.build("cnn_lstm", n_channels=3, seq_len=2000, lstm_hidden=32)

Input is always (batch, leads, samples). Classifiers return logits of shape (batch,);
autoencoders return a reconstruction of the input's exact shape. No model applies a sigmoid.
"""

from __future__ import annotations

# Importing the family modules registers them.
from ecgmodels import cnn, cnn_ae, cnn_lstm, cnn_lstm_ae, cnn_transformer, lstm, lstm_ae  # noqa: F401
from ecgmodels.config import MIN_REDUCED_LEN, ModelConfig, reduced_length
from ecgmodels.errors import InvalidArchitecture
from ecgmodels.registry import (
    build,
    count_params,
    default_params,
    is_autoencoder,
    list_models,
    make_config,
    model_param_names,
    register,
)

FAMILIES: tuple[str, ...] = tuple(list_models())
CLASSIFIERS: tuple[str, ...] = tuple(name for name in FAMILIES if not is_autoencoder(name))
AUTOENCODERS: tuple[str, ...] = tuple(name for name in FAMILIES if is_autoencoder(name))

__all__ = [
    "AUTOENCODERS",
    "CLASSIFIERS",
    "FAMILIES",
    "MIN_REDUCED_LEN",
    "InvalidArchitecture",
    "ModelConfig",
    "build",
    "count_params",
    "default_params",
    "is_autoencoder",
    "list_models",
    "make_config",
    "model_param_names",
    "reduced_length",
    "register",
]
