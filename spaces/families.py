"""One space per model family, and spaces that choose among families.

Ranges start from what the notebooks tuned by hand and stay small enough for CPU trials. Every
family also samples the input conditioning, and every classifier but `rhythm` the rhythm branch
(spaces/common.py). The `rhythm` family is offered by `classifiers` and `all` only when the
context knows the sampling rate (and the windows are long enough for rhythm features).
"""

from __future__ import annotations

from typing import Any

import optuna

import ecgmodels
from spaces.common import (
    ACTIVATIONS,
    MAX_SEQUENCE_STEPS,
    SpaceContext,
    family_possible,
    suggest_augmentation,
    suggest_conditioning,
    suggest_conv_stack,
    suggest_downsample,
    suggest_head,
    suggest_lstm,
    suggest_record_relative,
    suggest_rhythm_branch,
    suggest_training,
    suggest_transformer,
)
from spaces.registry import register


def _model(trial: optuna.Trial, ctx: SpaceContext, family: str) -> dict[str, Any]:
    """The model part of a config of `family` (the same parameters whichever space asks)."""
    params = _architecture(trial, ctx, family)
    names = ecgmodels.model_param_names(family)
    if "standardise_windows" in names:
        params.update(suggest_conditioning(trial, ctx))
    if "rhythm_branch" in names:
        params.update(suggest_rhythm_branch(trial, ctx))
    return params


def _architecture(trial: optuna.Trial, ctx: SpaceContext, family: str) -> dict[str, Any]:
    if family == "cnn":
        return {
            **suggest_conv_stack(trial, ctx),
            "head": trial.suggest_categorical("cnn_head", ["avg", "max", "flatten"]),
            **suggest_head(trial),
        }
    if family == "cnn_lstm":
        return {
            **suggest_conv_stack(trial, ctx, max_steps=MAX_SEQUENCE_STEPS),
            **suggest_lstm(trial),
            **suggest_head(trial),
        }
    if family == "cnn_transformer":
        return {
            **suggest_conv_stack(trial, ctx, max_steps=MAX_SEQUENCE_STEPS),
            **suggest_transformer(trial),
            **suggest_head(trial),
        }
    if family == "lstm":
        return {**suggest_downsample(trial), **suggest_lstm(trial), **suggest_head(trial)}
    if family == "cnn_ae":
        return {
            **suggest_conv_stack(trial, ctx),
            "latent_channels": trial.suggest_categorical("ae_latent_channels", [4, 8, 16, 32]),
        }
    if family == "cnn_lstm_ae":
        return {
            **suggest_conv_stack(trial, ctx, max_steps=MAX_SEQUENCE_STEPS),
            **suggest_lstm(trial),
            "latent_dim": trial.suggest_categorical("ae_latent_dim", [8, 16, 32, 64]),
        }
    if family == "lstm_ae":
        return {
            **suggest_downsample(trial),
            **suggest_lstm(trial),
            "latent_dim": trial.suggest_categorical("ae_latent_dim", [8, 16, 32, 64]),
        }
    if family == "rhythm":
        if not family_possible(family, ctx):
            raise ecgmodels.InvalidArchitecture(
                "the rhythm family needs the data's sampling rate (SpaceContext.fs) and windows of at least "
                f"two refractory periods; got fs={ctx.fs}, seq_len={ctx.seq_len}"
            )
        return {
            **suggest_head(trial),
            "activation": trial.suggest_categorical("fc_activation", list(ACTIVATIONS)),
            **suggest_record_relative(trial, ctx),
        }
    raise ValueError(f"no search space for model family {family!r}")


def _config(trial: optuna.Trial, ctx: SpaceContext, family: str) -> dict[str, Any]:
    return {
        "family": family,
        **_model(trial, ctx, family),
        **suggest_training(trial, autoencoder=ecgmodels.is_autoencoder(family)),
        **suggest_augmentation(trial, ctx),
    }


def _choose_family(trial: optuna.Trial, ctx: SpaceContext, families: tuple[str, ...]) -> dict[str, Any]:
    offered = [family for family in families if family_possible(family, ctx)]
    return _config(trial, ctx, trial.suggest_categorical("family", offered))


@register("cnn", families=("cnn",))
def cnn(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """1-D CNN: 2–5 conv layers, pooling, average/max/flatten head."""
    return _config(trial, ctx, "cnn")


@register("cnn_lstm", families=("cnn_lstm",))
def cnn_lstm(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """CNN feature extractor, then a (bi)LSTM over the pooled sequence."""
    return _config(trial, ctx, "cnn_lstm")


@register("cnn_transformer", families=("cnn_transformer",))
def cnn_transformer(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """CNN feature extractor, then a transformer encoder over the pooled sequence."""
    return _config(trial, ctx, "cnn_transformer")


@register("lstm", families=("lstm",))
def lstm(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """(bi)LSTM over the average-pooled raw signal."""
    return _config(trial, ctx, "lstm")


@register("cnn_ae", families=("cnn_ae",))
def cnn_ae(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """Convolutional autoencoder; anomalies score by reconstruction error."""
    return _config(trial, ctx, "cnn_ae")


@register("cnn_lstm_ae", families=("cnn_lstm_ae",))
def cnn_lstm_ae(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """CNN + LSTM encoder with a latent vector, LSTM + conv decoder."""
    return _config(trial, ctx, "cnn_lstm_ae")


@register("lstm_ae", families=("lstm_ae",))
def lstm_ae(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """LSTM autoencoder over the average-pooled raw signal."""
    return _config(trial, ctx, "lstm_ae")


@register("rhythm", families=("rhythm",))
def rhythm(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """R-R interval features from an in-graph R-peak detector, then an FC head (needs the sampling rate)."""
    return _config(trial, ctx, "rhythm")


@register("classifiers", families=ecgmodels.CLASSIFIERS)
def classifiers(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """Every classifier family (rhythm only when the sampling rate is known); the sampler chooses the family too."""
    return _choose_family(trial, ctx, ecgmodels.CLASSIFIERS)


@register("autoencoders", families=ecgmodels.AUTOENCODERS)
def autoencoders(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """Every autoencoder family; the sampler chooses the family too."""
    return _choose_family(trial, ctx, ecgmodels.AUTOENCODERS)


@register("all", families=ecgmodels.FAMILIES)
def all_families(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """Every family, classifiers and autoencoders, scored by the same objective (rhythm needs the sampling rate)."""
    return _choose_family(trial, ctx, ecgmodels.FAMILIES)
