"""Where a new study's search begins: the family defaults, written in the space's own parameter names.

A sampler's first trials are random. With a budget of a handful of cross-validated trials (a 45-minute
search on a CPU), that leaves the outcome to luck: two runs of the same short search found a best CV
ROC-AUC of 0.84 and of 0.77, the second below the family's own defaults. Starting from the defaults means
a search never ends below what a user gets without one, and TPE learns from a sensible first point: in
a third run (bench/quality.py, bench/RESULTS.md section 9) the second starting point reached 0.83 as
trial 1 and the search went on to 0.86.

`starting_points(space, ctx)` is a list of Optuna parameter dicts (a name, the points' meaning): the
defaults of the space's first family as near as the space can express them (a conv stack's kernels are
a first and a shared rest: the cnn defaults' 7, 5, 3 become 7, 5, 5), trained with the trainer's
defaults and no augmentation; and for a classifier that can take the rhythm branch, the same with the
branch on and `average` fusion (the network's and a timing regression's probabilities averaged; why,
in ecgmodels/rhythm.py), its rate features record-relative where the data has patient ids (on MIT-BIH
DS1 5-fold CV that point's trial value rose from 0.843 to 0.850, bench/record_relative.py). Parameters a
point does not name are left to the sampler.
"""

from __future__ import annotations

from typing import Any

import ecgmodels
from spaces.common import SpaceContext, family_possible

# The trainer's defaults (search/training/config.py TrainConfig; a test keeps the two equal), in the
# training parameters' names. Weight decay 0 is outside the sampled log range: its low end stands in.
TRAINING_DEFAULTS: dict[str, Any] = {
    "train_optimizer": "adamw",
    "train_lr": 1e-3,
    "train_weight_decay": 1e-6,
    "train_batch_size": 64,
    "train_scheduler": "none",
    "train_grad_clip": 0.0,
    "train_loss": "bce",
    "train_pos_weight": 1.0,
}
NO_AUGMENTATION: dict[str, Any] = {
    "aug_amplitude": 0.0,
    "aug_shift": 0.0,
    "aug_noise": 0.0,
    "aug_wander": 0.0,
    "aug_lead_dropout": 0.0,
}


def _conv_stack(params: dict[str, Any]) -> dict[str, Any]:
    channels, kernels, pools = params["out_channels"], params["kernel_sizes"], params["pool_sizes"]
    return {
        "conv_layers": len(channels),
        "conv_base_channels": channels[0],
        "conv_growth": channels[1] // channels[0] if len(channels) > 1 else 1,
        "conv_kernel_first": kernels[0],
        "conv_kernel_rest": kernels[1] if len(kernels) > 1 else kernels[0],
        **{f"conv_pool_{index}": pool for index, pool in enumerate(pools)},
        "conv_batch_norm": params["batch_norm"],
        "conv_activation": params["activation"],
        "conv_dropout": params["conv_dropout"],
    }


def _architecture(family: str, params: dict[str, Any]) -> dict[str, Any]:
    """The family defaults' architecture in the Optuna names spaces/common.py suggests."""
    point: dict[str, Any] = {}
    if "out_channels" in params:
        point.update(_conv_stack(params))
    if family == "cnn":
        point["cnn_head"] = params["head"]
    if "lstm_hidden" in params:
        point.update(
            lstm_layers=params["lstm_layers"],
            lstm_hidden=params["lstm_hidden"],
            lstm_bidirectional=params["bidirectional"],
        )
        if params["lstm_layers"] > 1:  # the space asks for it only then (one layer has nothing to drop)
            point["lstm_dropout"] = params["lstm_dropout"]
    if "downsample" in params:
        point["lstm_downsample"] = params["downsample"]
    if "d_model" in params:
        point.update(
            tf_d_model=params["d_model"],
            tf_nhead=params["nhead"],
            tf_layers=params["tf_layers"],
            tf_dim_feedforward=params["dim_feedforward"],
            tf_dropout=params["tf_dropout"],
        )
    if "fc_units" in params:
        point.update(fc_layers=len(params["fc_units"]), fc_dropout=params["fc_dropout"])
        if params["fc_units"]:
            point["fc_units"] = params["fc_units"][0]
    if family == "rhythm":
        point["fc_activation"] = params["activation"]
    if "latent_channels" in params:
        point["ae_latent_channels"] = params["latent_channels"]
    if "latent_dim" in params:
        point["ae_latent_dim"] = params["latent_dim"]
    return point


def family_defaults_point(family: str, ctx: SpaceContext) -> dict[str, Any]:
    """`family`'s defaults, trained with the trainer's defaults, as Optuna parameters."""
    params = ecgmodels.default_params(family)
    point = {**_architecture(family, params), **NO_AUGMENTATION}
    point["cond_standardise_windows"] = params["standardise_windows"]
    if ctx.fs is not None:
        point["cond_remove_baseline"] = params["remove_baseline"]
    if "rhythm_branch" in params and ctx.rhythm_possible:
        point["rhythm_branch"] = params["rhythm_branch"]
    if family == "rhythm" and ctx.record_relative_possible:
        point["rhythm_relative"] = params["rhythm_relative"]
    training = dict(TRAINING_DEFAULTS)
    if ecgmodels.is_autoencoder(family):  # they train on reconstruction error: no loss choice
        training = {k: v for k, v in training.items() if k not in ("train_loss", "train_pos_weight")}
    return {**point, **training}


def starting_points(families: tuple[str, ...], ctx: SpaceContext) -> list[tuple[str, dict[str, Any]]]:
    """(what it is, Optuna parameters) for each starting point of a space offering `families`."""
    offered = [family for family in families if family_possible(family, ctx)]
    if not offered:
        return []
    family = offered[0]
    chosen = {"family": family} if len(families) > 1 else {}
    defaults = {**chosen, **family_defaults_point(family, ctx)}
    points = [(f"{family} defaults", defaults)]
    if "rhythm_branch" in defaults and not defaults["rhythm_branch"]:
        with_rhythm = {**defaults, "rhythm_branch": True, "rhythm_fusion": "average"}
        name = f"{family} defaults + rhythm branch (average)"
        if ctx.record_relative_possible:
            with_rhythm["rhythm_relative"] = True
            name = f"{family} defaults + rhythm branch (average, record-relative)"
        points.append((name, with_rhythm))
    return points
