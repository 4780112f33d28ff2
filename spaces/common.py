"""Parameter groups that several spaces share: training, conv stack, LSTM, transformer, FC head,
input conditioning, rhythm branch.

Optuna parameters are scalars with prefixed names (`train_`, `conv_`, `lstm_`, `tf_`, `fc_`,
`ae_`, `cond_`, `rhythm_`); each group turns them into the flat config's keys (docs/INTERNALS.md).
One Optuna name always has one distribution, whichever family suggests it: Optuna refuses a name
whose distribution changes within a study, and a shared name lets TPE learn across families.

Input conditioning and rhythm (flat config key <- Optuna name):
    standardise_windows <- cond_standardise_windows  every family
    remove_baseline     <- cond_remove_baseline      every family, only when ctx.fs is known
    rhythm_branch       <- rhythm_branch             cnn, cnn_lstm, cnn_transformer, lstm; fs known
    rhythm_fusion       <- rhythm_fusion             the same, when rhythm_branch is on: concat | average
    rhythm_relative     <- rhythm_relative           the same, and the rhythm family, when the data has
                                                     patient ids (record-relative timing)
    activation          <- fc_activation             the rhythm family's head
An option that is not offered is written as false, so every config spells out what it builds.
The choice sets depend only on the SpaceContext, which is fixed for a study's whole life.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from ecgmodels import MIN_REDUCED_LEN, RHYTHM_FUSIONS, rhythm_possible

CONV_MAX_LAYERS = 5
CONV_MAX_CHANNELS = 128
KERNEL_SIZES = (3, 5, 7, 9, 11)
POOL_SIZES = (1, 2, 4)
ACTIVATIONS = ("relu", "gelu", "elu", "leaky_relu")
# Recurrent and attention layers after a conv stack are slow over long sequences (attention
# memory grows with its square): the stack pools at least down to this many steps if it can.
MAX_SEQUENCE_STEPS = 256


@dataclass(frozen=True)
class SpaceContext:
    """What a space needs to know about the data to keep its architectures valid.

    `fs` is the sampling rate in Hz when known: only then are baseline removal, the rhythm
    branch and the rhythm family offered. `patient_ids`: whether the data carries the patient of
    each window; only then is record-relative timing offered (a model with it needs them to score).
    A study must keep one context for its whole life: Optuna refuses a categorical parameter whose
    choices change within a study.
    """

    n_channels: int
    seq_len: int
    fs: float | None = None
    patient_ids: bool = False

    @property
    def rhythm_possible(self) -> bool:
        """Whether rhythm features can be built for this data (fs known, windows long enough)."""
        return rhythm_possible(self.fs, self.seq_len)

    @property
    def record_relative_possible(self) -> bool:
        """Whether rhythm features may be record-relative: they can be built and patients are known."""
        return self.rhythm_possible and self.patient_ids


def family_possible(family: str, ctx: SpaceContext) -> bool:
    """Whether a space may offer `family` for this data (the rhythm family needs rhythm features)."""
    return family != "rhythm" or ctx.rhythm_possible


def suggest_training(trial: optuna.Trial, *, autoencoder: bool = False) -> dict[str, Any]:
    """Optimiser, schedule and loss; epochs, objective and seed come from the study, not here."""
    optimizer = trial.suggest_categorical("train_optimizer", ["adam", "adamw", "sgd"])
    # SGD's useful learning rates sit 10-100x above Adam's: one shared range left SGD trials all but
    # frozen (train loss flat over 6 epochs in a cnn_lstm search on MIT-BIH), so each gets its own.
    if optimizer == "sgd":
        lr = trial.suggest_float("train_lr_sgd", 1e-3, 1e-1, log=True)
    else:
        lr = trial.suggest_float("train_lr", 1e-4, 3e-3, log=True)
    config: dict[str, Any] = {
        "lr": lr,
        "weight_decay": trial.suggest_float("train_weight_decay", 1e-6, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("train_batch_size", [32, 64, 128]),
        "optimizer": optimizer,
        "scheduler": trial.suggest_categorical("train_scheduler", ["none", "plateau", "cosine"]),
        "grad_clip": trial.suggest_categorical("train_grad_clip", [0.0, 1.0, 5.0]),
    }
    if optimizer == "sgd":
        config["momentum"] = trial.suggest_float("train_momentum", 0.8, 0.99)
    if autoencoder:
        # Autoencoders always train on reconstruction error: class weighting does not apply.
        return config
    config["loss"] = trial.suggest_categorical("train_loss", ["bce", "focal"])
    if config["loss"] == "focal":
        config["focal_gamma"] = trial.suggest_float("train_focal_gamma", 1.0, 3.0)
    config["pos_weight"] = trial.suggest_categorical("train_pos_weight", [1.0, "auto"])
    return config


def suggest_augmentation(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """Training-time ECG augmentation (what differs between patients: amplitude, timing within the window,
    noise, baseline wander, a missing lead); each may be off. Strengths are in the units the model sees
    (windows normalised per lead), so they mean the same on any dataset."""
    config = {
        "aug_amplitude": trial.suggest_categorical("aug_amplitude", [0.0, 0.1, 0.2, 0.3]),
        "aug_shift": trial.suggest_categorical("aug_shift", [0.0, 0.05, 0.1]),
        "aug_noise": trial.suggest_categorical("aug_noise", [0.0, 0.02, 0.05, 0.1]),
        "aug_wander": trial.suggest_categorical("aug_wander", [0.0, 0.1, 0.3]),
    }
    # Zeroing a lead needs another to learn from; one-lead data never samples it.
    lead_dropout = [0.0, 0.1, 0.25] if ctx.n_channels > 1 else [0.0]
    config["aug_lead_dropout"] = trial.suggest_categorical("aug_lead_dropout", lead_dropout)
    return config


def suggest_conv_stack(trial: optuna.Trial, ctx: SpaceContext, *, max_steps: int | None = None) -> dict[str, Any]:
    """A 2–5 layer conv stack; `max_steps` caps the pooled length for sequence layers after it.

    Pool sizes are sampled per layer, then fitted to the input: lowered (from the last layer)
    where they would leave fewer than MIN_REDUCED_LEN steps, raised (from the first layer)
    where a sequence layer would see more than `max_steps`. The config holds the fitted sizes.
    """
    layers = trial.suggest_int("conv_layers", 2, CONV_MAX_LAYERS)
    base = trial.suggest_categorical("conv_base_channels", [16, 32, 64])
    growth = trial.suggest_categorical("conv_growth", [1, 2])
    first_kernel = trial.suggest_categorical("conv_kernel_first", list(KERNEL_SIZES))
    rest_kernel = trial.suggest_categorical("conv_kernel_rest", list(KERNEL_SIZES))
    pools = [trial.suggest_categorical(f"conv_pool_{index}", list(POOL_SIZES)) for index in range(layers)]
    return {
        "out_channels": [min(base * growth**index, CONV_MAX_CHANNELS) for index in range(layers)],
        "kernel_sizes": [first_kernel] + [rest_kernel] * (layers - 1),
        "pool_sizes": fit_pool_sizes(pools, ctx.seq_len, max_steps=max_steps),
        "batch_norm": trial.suggest_categorical("conv_batch_norm", [True, False]),
        "activation": trial.suggest_categorical("conv_activation", list(ACTIVATIONS)),
        "conv_dropout": trial.suggest_float("conv_dropout", 0.0, 0.5),
    }


def fit_pool_sizes(pools: list[int], seq_len: int, *, max_steps: int | None = None) -> list[int]:
    """`pools` adjusted within POOL_SIZES so seq_len pools to >= MIN_REDUCED_LEN (and <= max_steps)."""
    fitted = list(pools)

    def steps() -> int:
        length = seq_len
        for pool in fitted:
            length //= pool
        return length

    for index in reversed(range(len(fitted))):
        while steps() < MIN_REDUCED_LEN and fitted[index] > 1:
            fitted[index] = _neighbour(fitted[index], -1)
    if max_steps is not None:
        for index in range(len(fitted)):
            while steps() > max_steps and fitted[index] < POOL_SIZES[-1]:
                fitted[index] = _neighbour(fitted[index], +1)
                if steps() < MIN_REDUCED_LEN:
                    fitted[index] = _neighbour(fitted[index], -1)
                    break
    return fitted


def suggest_lstm(trial: optuna.Trial) -> dict[str, Any]:
    layers = trial.suggest_int("lstm_layers", 1, 3)
    return {
        "lstm_hidden": trial.suggest_categorical("lstm_hidden", [32, 64, 128, 256]),
        "lstm_layers": layers,
        # PyTorch applies LSTM dropout between layers only: one layer has nothing to drop.
        "lstm_dropout": trial.suggest_float("lstm_dropout", 0.0, 0.5) if layers > 1 else 0.0,
        "bidirectional": trial.suggest_categorical("lstm_bidirectional", [True, False]),
    }


def suggest_downsample(trial: optuna.Trial) -> dict[str, Any]:
    """Average-pooling factor before a raw-sequence LSTM (2000 raw steps are slow to recur over)."""
    return {"downsample": trial.suggest_categorical("lstm_downsample", [4, 8, 16])}


def suggest_transformer(trial: optuna.Trial) -> dict[str, Any]:
    # Every nhead choice divides every d_model choice, so no combination is invalid.
    return {
        "d_model": trial.suggest_categorical("tf_d_model", [32, 64, 128]),
        "nhead": trial.suggest_categorical("tf_nhead", [2, 4, 8]),
        "tf_layers": trial.suggest_int("tf_layers", 1, 4),
        "dim_feedforward": trial.suggest_categorical("tf_dim_feedforward", [64, 128, 256, 512]),
        "tf_dropout": trial.suggest_float("tf_dropout", 0.0, 0.3),
    }


def suggest_head(trial: optuna.Trial) -> dict[str, Any]:
    """FC layers before the logit: 0–2 layers, the second half as wide as the first."""
    layers = trial.suggest_int("fc_layers", 0, 2)
    width = trial.suggest_categorical("fc_units", [32, 64, 128, 256]) if layers else 0
    return {
        "fc_units": [width // 2**index for index in range(layers)],
        "fc_dropout": trial.suggest_float("fc_dropout", 0.0, 0.5),
    }


def suggest_conditioning(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """Per-window z-scoring and baseline removal (the latter needs the sampling rate)."""
    return {
        "standardise_windows": trial.suggest_categorical("cond_standardise_windows", [False, True]),
        "remove_baseline": (
            trial.suggest_categorical("cond_remove_baseline", [False, True]) if ctx.fs is not None else False
        ),
    }


def suggest_rhythm_branch(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """Whether a classifier sees the window's rhythm features beside its own (needs the sampling rate)."""
    if not ctx.rhythm_possible:
        return {"rhythm_branch": False}
    if not trial.suggest_categorical("rhythm_branch", [False, True]):
        return {"rhythm_branch": False}
    fusion = trial.suggest_categorical("rhythm_fusion", list(RHYTHM_FUSIONS))
    return {"rhythm_branch": True, "rhythm_fusion": fusion, **suggest_record_relative(trial, ctx)}


def suggest_record_relative(trial: optuna.Trial, ctx: SpaceContext) -> dict[str, Any]:
    """Whether rhythm features take the rate relative to the patient's own (needs patient ids)."""
    if not ctx.record_relative_possible:
        return {"rhythm_relative": False}
    return {"rhythm_relative": trial.suggest_categorical("rhythm_relative", [False, True])}


def _neighbour(pool: int, direction: int) -> int:
    return POOL_SIZES[POOL_SIZES.index(pool) + direction]
