"""One space per model family, and spaces that choose among families.

Ranges start from what the notebooks tuned by hand and stay small enough for CPU trials.
"""

from __future__ import annotations

from typing import Any

import optuna

import ecgmodels
from spaces.common import (
    MAX_SEQUENCE_STEPS,
    SpaceContext,
    suggest_conv_stack,
    suggest_downsample,
    suggest_head,
    suggest_lstm,
    suggest_training,
    suggest_transformer,
)
from spaces.registry import register


def _model(trial: optuna.Trial, ctx: SpaceContext, family: str) -> dict[str, Any]:
    """The model part of a config of `family` (the same parameters whichever space asks)."""
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
    raise ValueError(f"no search space for model family {family!r}")


def _config(trial: optuna.Trial, ctx: SpaceContext, family: str) -> dict[str, Any]:
    return {
        "family": family,
        **_model(trial, ctx, family),
        **suggest_training(trial, autoencoder=ecgmodels.is_autoencoder(family)),
    }


def _choose_family(trial: optuna.Trial, ctx: SpaceContext, families: tuple[str, ...]) -> dict[str, Any]:
    return _config(trial, ctx, trial.suggest_categorical("family", list(families)))


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


@register("classifiers", families=ecgmodels.CLASSIFIERS)
def classifiers(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """Every classifier family; the sampler chooses the family too."""
    return _choose_family(trial, ctx, ecgmodels.CLASSIFIERS)


@register("autoencoders", families=ecgmodels.AUTOENCODERS)
def autoencoders(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """Every autoencoder family; the sampler chooses the family too."""
    return _choose_family(trial, ctx, ecgmodels.AUTOENCODERS)


@register("all", families=ecgmodels.FAMILIES)
def all_families(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """Every family, classifiers and autoencoders, scored by the same objective."""
    return _choose_family(trial, ctx, ecgmodels.FAMILIES)
