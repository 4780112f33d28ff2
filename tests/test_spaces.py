"""spaces/: every space samples configs that build, run and serialise; invalid ones are rejected."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import optuna
import pytest
import torch

import ecgmodels
import spaces
from spaces.common import MAX_SEQUENCE_STEPS, fit_pool_sizes

N_CHANNELS, SEQ_LEN, FS = 3, 2000, 360.0
CTX = spaces.SpaceContext(n_channels=N_CHANNELS, seq_len=SEQ_LEN, fs=FS)
NO_FS = spaces.SpaceContext(n_channels=N_CHANNELS, seq_len=SEQ_LEN)
N_TRIALS = 50
EXPECTED_SPACES = {
    "cnn",
    "cnn_lstm",
    "cnn_transformer",
    "lstm",
    "cnn_ae",
    "cnn_lstm_ae",
    "lstm_ae",
    "rhythm",
    "classifiers",
    "autoencoders",
    "all",
}
# Added by the worker from the study, never by a space.
STUDY_KEYS = {"epochs", "objective", "seed"}


def sample(name: str, n_trials: int, ctx: spaces.SpaceContext = CTX, seed: int = 0):
    """(config, trial) pairs from `n_trials` random trials of space `name` in one study."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    space = spaces.get(name)
    pairs = []
    for _ in range(n_trials):
        trial = study.ask()
        config = space(trial, ctx)
        study.tell(trial, 0.5)
        pairs.append((config, study.trials[trial.number]))
    return pairs


def test_registry() -> None:
    assert set(spaces.names()) == EXPECTED_SPACES
    assert spaces.get("classifiers").families == ecgmodels.CLASSIFIERS
    assert spaces.get("autoencoders").families == ecgmodels.AUTOENCODERS
    assert spaces.get("cnn_lstm").description
    with pytest.raises(spaces.UnknownSpace, match="valid spaces: cnn, ") as raised:
        spaces.get("resnet")
    assert isinstance(raised.value, ValueError)
    with pytest.raises(ValueError, match="already registered"):
        spaces.register("cnn", families=("cnn",))(lambda trial, ctx: {})
    with pytest.raises(ValueError, match="unknown model families"):
        spaces.register("vit", families=("vit",))


@pytest.mark.parametrize("name", sorted(EXPECTED_SPACES))
def test_space_samples_valid_configs(name: str) -> None:
    from search.training.config import split_config

    families = Counter()
    smallest: tuple[int, dict] | None = None
    for config, _ in sample(name, N_TRIALS):
        family = config["family"]
        families[family] += 1
        assert family in spaces.get(name).families
        assert not STUDY_KEYS & set(config)
        assert json.loads(json.dumps(config)) == config
        # Every key is a model parameter of the family or a training field (split_config checks).
        split_family, params, _train = split_config({**config, "epochs": 2, "objective": "roc_auc", "seed": 0})
        assert split_family == family and params == spaces.model_params(config)
        n_params = spaces.validate_config(config, n_channels=N_CHANNELS, seq_len=SEQ_LEN, fs=FS)
        assert n_params > 0
        if smallest is None or n_params < smallest[0]:
            smallest = (n_params, config)
    if name in ("classifiers", "autoencoders", "all"):
        assert set(families) == set(spaces.get(name).families)
    else:
        # One forward pass per family (the single-family spaces cover every family); the
        # smallest sampled model keeps it fast on two shared cores.
        assert smallest is not None
        config = smallest[1]
        family = config["family"]
        model = ecgmodels.build(family, n_channels=N_CHANNELS, seq_len=SEQ_LEN, fs=FS, **spaces.model_params(config))
        with torch.no_grad():
            output = model.eval()(torch.zeros(2, N_CHANNELS, SEQ_LEN))
        expected = (2, N_CHANNELS, SEQ_LEN) if ecgmodels.is_autoencoder(family) else (2,)
        assert tuple(output.shape) == expected


def test_one_optuna_name_has_one_distribution_everywhere() -> None:
    seen: dict[str, set[str]] = defaultdict(set)
    for name in sorted(EXPECTED_SPACES - {"classifiers", "autoencoders", "all"}):
        for _, trial in sample(name, 25, seed=1):
            for param, distribution in trial.distributions.items():
                seen[param].add(repr(distribution))
    conflicts = {param: dists for param, dists in seen.items() if len(dists) > 1}
    assert conflicts == {}
    prefixes = ("train_", "aug_", "conv_", "lstm_", "tf_", "fc_", "ae_", "cnn_", "cond_", "rhythm_")
    assert all(param.startswith(prefixes) for param in seen)


@pytest.mark.parametrize("fs", [None, FS])
def test_short_sequences_keep_pooling_valid(fs: float | None) -> None:
    # At 360 Hz 100 samples cannot hold the two refractory periods rhythm features need.
    ctx = spaces.SpaceContext(n_channels=1, seq_len=100, fs=fs)
    assert not ctx.rhythm_possible
    for config, _ in sample("classifiers", 30, ctx=ctx, seed=2):
        assert config["family"] != "rhythm" and not config["rhythm_branch"]
        spaces.validate_config(config, n_channels=1, seq_len=100, fs=fs)


def test_fit_pool_sizes() -> None:
    assert fit_pool_sizes([4, 4, 4, 4, 4], 2000) == [4, 4, 4, 4, 1]  # 7 steps, not 1
    assert fit_pool_sizes([2, 2], 2000) == [2, 2]
    fitted = fit_pool_sizes([1, 1], 2000, max_steps=MAX_SEQUENCE_STEPS)
    assert fitted == [4, 2]  # 250 steps
    assert fit_pool_sizes([1, 1, 1], 2000, max_steps=MAX_SEQUENCE_STEPS) == [4, 2, 1]
    # Cannot reach max_steps without going below the minimum: stop at the minimum side.
    assert fit_pool_sizes([1, 1], 20, max_steps=2) == [4, 1]


def test_sequence_families_pool_to_at_most_max_steps() -> None:
    for config, _ in sample("cnn_transformer", 30, seed=3):
        assert ecgmodels.reduced_length(SEQ_LEN, config["pool_sizes"]) <= MAX_SEQUENCE_STEPS
        assert config["d_model"] % config["nhead"] == 0


def test_validate_config_rejects_with_the_reason() -> None:
    config, _ = sample("cnn", 1)[0]
    n_params = spaces.validate_config(config, n_channels=N_CHANNELS, seq_len=SEQ_LEN, fs=FS)
    assert (
        spaces.validate_config(config, n_channels=N_CHANNELS, seq_len=SEQ_LEN, fs=FS, max_params=n_params) == n_params
    )
    with pytest.raises(ecgmodels.InvalidArchitecture, match=rf"{n_params} parameters > max_params {n_params - 1}"):
        spaces.validate_config(config, n_channels=N_CHANNELS, seq_len=SEQ_LEN, fs=FS, max_params=n_params - 1)
    too_much_pooling = {**config, "out_channels": [8, 8], "kernel_sizes": [3, 3], "pool_sizes": [4, 4]}
    with pytest.raises(ecgmodels.InvalidArchitecture, match="pool_sizes"):
        spaces.validate_config(too_much_pooling, n_channels=N_CHANNELS, seq_len=20, fs=FS)
    with pytest.raises(ValueError, match="'family'"):
        spaces.validate_config({"lr": 0.001}, n_channels=N_CHANNELS, seq_len=SEQ_LEN, fs=FS)


def test_sgd_samples_its_own_learning_rate_range() -> None:
    by_optimizer: dict[str, list[float]] = defaultdict(list)
    for config, trial in sample("cnn", 60):
        by_optimizer[config["optimizer"]].append(config["lr"])
        assert ("train_lr_sgd" in trial.params) == (config["optimizer"] == "sgd")
    assert by_optimizer["sgd"] and by_optimizer["adam"] + by_optimizer["adamw"]
    assert all(1e-3 <= lr <= 1e-1 for lr in by_optimizer["sgd"])
    assert all(1e-4 <= lr <= 3e-3 for lr in by_optimizer["adam"] + by_optimizer["adamw"])


def test_augmentation_is_searched_for_every_family_and_builds_a_training_config() -> None:
    from search.training.config import split_config

    seen: dict[str, set] = defaultdict(set)
    for config, trial in sample("all", 80, seed=6):
        for key in ("aug_amplitude", "aug_shift", "aug_noise", "aug_wander", "aug_lead_dropout"):
            assert key in trial.params and config[key] == trial.params[key]
            seen[key].add(config[key])
        split_config({**config, "epochs": 1, "objective": "roc_auc", "seed": 0})  # TrainConfig accepts them
    assert all(0.0 in values and len(values) > 1 for values in seen.values())
    # Zeroing a lead needs another lead to learn from.
    one_lead = spaces.SpaceContext(n_channels=1, seq_len=SEQ_LEN, fs=FS)
    assert {config["aug_lead_dropout"] for config, _ in sample("cnn", 20, ctx=one_lead)} == {0.0}


def test_new_options_are_sampled_for_every_family_when_fs_is_known() -> None:
    seen: dict[str, set] = defaultdict(set)
    for config, trial in sample("all", 120, seed=4):
        family = config["family"]
        seen["family"].add(family)
        assert "cond_standardise_windows" in trial.params and "cond_remove_baseline" in trial.params
        for key in ("standardise_windows", "remove_baseline", "rhythm_branch"):
            if key in config:
                seen[key].add(config[key])
        has_branch = family in ecgmodels.CLASSIFIERS and family != "rhythm"
        assert ("rhythm_branch" in trial.params) is has_branch
        assert ("rhythm_branch" in config) is has_branch
        # How the branch joins is a choice only when there is a branch.
        assert ("rhythm_fusion" in trial.params) is bool(config.get("rhythm_branch"))
        if "rhythm_fusion" in config:
            seen["rhythm_fusion"].add(config["rhythm_fusion"])
    assert seen["family"] == set(ecgmodels.FAMILIES)
    assert seen["rhythm_fusion"] == set(ecgmodels.RHYTHM_FUSIONS)
    assert seen["standardise_windows"] == seen["remove_baseline"] == seen["rhythm_branch"] == {False, True}


@pytest.mark.parametrize("name", ["classifiers", "all", "cnn", "cnn_ae", "lstm"])
def test_without_fs_nothing_that_needs_it_is_offered(name: str) -> None:
    for config, trial in sample(name, 30, ctx=NO_FS, seed=5):
        assert config["family"] != "rhythm"
        assert "cond_remove_baseline" not in trial.params and "rhythm_branch" not in trial.params
        assert config["remove_baseline"] is False and config.get("rhythm_branch", False) is False
        assert "cond_standardise_windows" in trial.params
        # Buildable by a caller that does not know the sampling rate.
        spaces.validate_config(config, n_channels=N_CHANNELS, seq_len=SEQ_LEN)
    if name in ("classifiers", "all"):
        study = optuna.create_study()
        trial = study.ask()
        spaces.get(name)(trial, NO_FS)
        assert "rhythm" not in trial.distributions["family"].choices


def test_rhythm_space_needs_the_sampling_rate() -> None:
    config, trial = sample("rhythm", 1)[0]
    assert config["family"] == "rhythm" and config["activation"] in spaces.common.ACTIVATIONS
    assert "fc_activation" in trial.params
    with pytest.raises(ecgmodels.InvalidArchitecture, match="needs the data's sampling rate"):
        spaces.get("rhythm")(optuna.create_study().ask(), NO_FS)
    # What a `start` command can check before it creates a study.
    spaces.get("rhythm").check_context(CTX)
    with pytest.raises(ecgmodels.InvalidArchitecture, match="'rhythm' needs the data's sampling rate"):
        spaces.get("rhythm").check_context(NO_FS)
    for name in sorted(EXPECTED_SPACES - {"rhythm"}):
        spaces.get(name).check_context(NO_FS)
    assert "rhythm" not in spaces.get("all").offered_families(NO_FS)
    assert spaces.get("all").offered_families(CTX) == ecgmodels.FAMILIES
