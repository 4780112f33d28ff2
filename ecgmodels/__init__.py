"""ECG model families as plain `nn.Module`s behind a timm-style registry (imports torch only).

    model = ecgmodels.build("cnn_lstm", n_channels=3, seq_len=2000, fs=360.0, lstm_hidden=32)

Input is always (batch, leads, samples). Classifiers return logits of shape (batch,);
autoencoders return a reconstruction of the input's exact shape. No model applies a sigmoid.
`fs` (Hz) is optional and belongs to the data like `seq_len`: the `rhythm` family and the options
`remove_baseline` and `rhythm_branch` need it and raise InvalidArchitecture without it.
A classifier with record-relative timing (`rhythm_relative`) takes a second input, each window's
record RR: `model(x, record_rr)` with `record_rr = ecgmodels.record_rr(windows, patient_ids, fs=fs)`.
"""

from __future__ import annotations

# Importing the family modules registers them.
from ecgmodels import (  # noqa: F401
    cnn,
    cnn_ae,
    cnn_lstm,
    cnn_lstm_ae,
    cnn_transformer,
    lstm,
    lstm_ae,
    rhythm_classifier,
)
from ecgmodels.conditioning import InputConditioning
from ecgmodels.config import MIN_REDUCED_LEN, ConditioningParams, ModelConfig, RhythmBranchParams, reduced_length
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
from ecgmodels.rhythm import FEATURE_NAMES as RHYTHM_FEATURE_NAMES
from ecgmodels.rhythm import RELATIVE_FEATURE_NAMES as RHYTHM_RELATIVE_FEATURE_NAMES
from ecgmodels.rhythm import (
    RHYTHM_FUSIONS,
    RhythmBranch,
    RhythmFeatures,
    adapt_to_data,
    record_rr,
    record_rr_for,
    rhythm_possible,
    uses_record_rr,
)

FAMILIES: tuple[str, ...] = tuple(list_models())
CLASSIFIERS: tuple[str, ...] = tuple(name for name in FAMILIES if not is_autoencoder(name))
AUTOENCODERS: tuple[str, ...] = tuple(name for name in FAMILIES if is_autoencoder(name))

__all__ = [
    "AUTOENCODERS",
    "CLASSIFIERS",
    "FAMILIES",
    "MIN_REDUCED_LEN",
    "RHYTHM_FEATURE_NAMES",
    "RHYTHM_FUSIONS",
    "RHYTHM_RELATIVE_FEATURE_NAMES",
    "ConditioningParams",
    "InputConditioning",
    "InvalidArchitecture",
    "ModelConfig",
    "RhythmBranch",
    "RhythmBranchParams",
    "RhythmFeatures",
    "adapt_to_data",
    "build",
    "count_params",
    "default_params",
    "is_autoencoder",
    "list_models",
    "make_config",
    "model_param_names",
    "record_rr",
    "record_rr_for",
    "reduced_length",
    "register",
    "rhythm_possible",
    "uses_record_rr",
]
