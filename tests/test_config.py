"""search.training.config: TrainConfig validation, and splitting/joining the flat trial config."""

from __future__ import annotations

import json
import math

import pytest

from search.training.config import TRAIN_FIELDS, ConfigError, TrainConfig, join_config, split_config


def test_defaults_are_valid() -> None:
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.optimizer, cfg.lr) == (10, 64, "adamw", 1e-3)
    assert (cfg.scheduler, cfg.loss, cfg.pos_weight, cfg.patience, cfg.objective) == (
        "none",
        "bce",
        1.0,
        0,
        "roc_auc",
    )
    assert cfg.amp is True and cfg.seed == 0
    assert (cfg.selection, cfg.selection_window) == ("smoothed", 3)
    assert (cfg.aug_amplitude, cfg.aug_shift, cfg.aug_noise, cfg.aug_wander, cfg.aug_lead_dropout) == (0.0,) * 5
    assert {"epochs", "lr", "pos_weight", "amp", "objective", "selection", "aug_noise"} <= TRAIN_FIELDS


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("epochs", 0, "integer >= 1"),
        ("epochs", 2.5, "integer >= 1"),
        ("epochs", True, "integer >= 1"),
        ("batch_size", -4, "integer >= 1"),
        ("optimizer", "rmsprop", "adam, adamw, sgd"),
        ("lr", 0.0, "> 0"),
        ("lr", math.inf, "finite"),
        ("lr", "fast", "finite number"),
        ("weight_decay", -1e-4, ">= 0"),
        ("momentum", 1.0, "[0, 1)"),
        ("scheduler", "step", "none, plateau, cosine"),
        ("grad_clip", -1.0, ">= 0"),
        ("loss", "hinge", "bce, focal"),
        ("pos_weight", 0, '"auto"'),
        ("pos_weight", "automatic", '"auto"'),
        ("focal_gamma", -0.5, ">= 0"),
        ("patience", -1, "integer >= 0"),
        ("objective", "auc", "roc_auc"),
        ("seed", -3, "integer >= 0"),
        ("amp", "yes", "true or false"),
        ("selection", "max", "best, last, smoothed"),
        ("selection_window", 0, "integer >= 1"),
        ("aug_amplitude", 1.0, "< 1"),
        ("aug_amplitude", -0.1, ">= 0"),
        ("aug_shift", 0.6, "<= 0.5"),
        ("aug_noise", math.nan, "finite"),
        ("aug_wander", -1, ">= 0"),
        ("aug_lead_dropout", 1.5, "<= 1"),
        ("aug_lead_dropout", "often", "finite number"),
    ],
)
def test_bad_values_name_the_field_the_value_and_what_was_expected(field, value, expected) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{field: value})
    message = str(info.value)
    assert repr(field) in message
    assert repr(value) in message or str(value) in message
    assert expected in message
    assert isinstance(info.value, ValueError)


def test_whole_numbers_become_floats_and_auto_pos_weight_is_kept() -> None:
    cfg = TrainConfig(lr=1, grad_clip=2, pos_weight="auto", aug_lead_dropout=1)
    assert isinstance(cfg.lr, float) and isinstance(cfg.grad_clip, float) and isinstance(cfg.aug_lead_dropout, float)
    assert cfg.pos_weight == "auto"


CNN_LSTM_CONFIG = {
    "family": "cnn_lstm",
    "out_channels": [32, 64],
    "kernel_sizes": [7, 5],
    "pool_sizes": [4, 2],
    "batch_norm": True,
    "activation": "relu",
    "conv_dropout": 0.1,
    "lstm_hidden": 64,
    "lstm_layers": 1,
    "lstm_dropout": 0.0,
    "bidirectional": True,
    "fc_units": [64],
    "fc_dropout": 0.3,
    "epochs": 10,
    "batch_size": 64,
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "momentum": 0.9,
    "scheduler": "cosine",
    "grad_clip": 1.0,
    "loss": "bce",
    "pos_weight": 1.0,
    "focal_gamma": 2.0,
    "patience": 0,
    "objective": "roc_auc",
    "seed": 0,
}


def test_split_and_join_round_trip_the_internals_example() -> None:
    family, model_params, cfg = split_config(CNN_LSTM_CONFIG)
    assert family == "cnn_lstm"
    assert model_params["out_channels"] == [32, 64] and model_params["bidirectional"] is True
    assert not set(model_params) & TRAIN_FIELDS
    assert cfg.scheduler == "cosine" and cfg.grad_clip == 1.0 and cfg.weight_decay == 1e-4
    flat = join_config(family, model_params, cfg)
    defaults = {"amp": True, "selection": "smoothed", "selection_window": 3}
    defaults |= {f"aug_{name}": 0.0 for name in ("amplitude", "shift", "noise", "wander", "lead_dropout")}
    assert flat == {**CNN_LSTM_CONFIG, **defaults}  # the example leaves these at their defaults
    assert json.loads(json.dumps(flat)) == flat
    assert split_config(flat) == (family, model_params, cfg)


def test_join_gives_lists_for_tuples() -> None:
    flat = join_config("cnn", {"out_channels": (8, 16)}, TrainConfig())
    assert flat["out_channels"] == [8, 16]
    json.dumps(flat)


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'learning_rate'.*'cnn_lstm'"):
        split_config({**CNN_LSTM_CONFIG, "learning_rate": 0.1})


def test_a_model_param_of_another_family_is_unknown_here() -> None:
    with pytest.raises(ConfigError, match="'d_model'"):
        split_config({**CNN_LSTM_CONFIG, "d_model": 64})


def test_missing_or_unknown_family() -> None:
    with pytest.raises(ConfigError, match="'family'"):
        split_config({"lr": 0.1})
    with pytest.raises(ConfigError, match=r"'family'.*'resnet'"):
        split_config({"family": "resnet"})


def test_bad_train_value_in_a_flat_config_is_named() -> None:
    with pytest.raises(ConfigError, match="'optimizer'"):
        split_config({**CNN_LSTM_CONFIG, "optimizer": "lbfgs"})
