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

N_CHANNELS, SEQ_LEN = 3, 2000
CTX = spaces.SpaceContext(n_channels=N_CHANNELS, seq_len=SEQ_LEN)
N_TRIALS = 50
EXPECTED_SPACES = {
    "cnn",
    "cnn_lstm",
    "cnn_transformer",
    "lstm",
    "cnn_ae",
    "cnn_lstm_ae",
    "lstm_ae",
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
        n_params = spaces.validate_config(config, n_channels=N_CHANNELS, seq_len=SEQ_LEN)
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
        model = ecgmodels.build(family, n_channels=N_CHANNELS, seq_len=SEQ_LEN, **spaces.model_params(config))
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
    prefixes = ("train_", "conv_", "lstm_", "tf_", "fc_", "ae_", "cnn_")
    assert all(param.startswith(prefixes) for param in seen)


def test_short_sequences_keep_pooling_valid() -> None:
    ctx = spaces.SpaceContext(n_channels=1, seq_len=100)
    for config, _ in sample("classifiers", 30, ctx=ctx, seed=2):
        spaces.validate_config(config, n_channels=1, seq_len=100)


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
    n_params = spaces.validate_config(config, n_channels=N_CHANNELS, seq_len=SEQ_LEN)
    assert spaces.validate_config(config, n_channels=N_CHANNELS, seq_len=SEQ_LEN, max_params=n_params) == n_params
    with pytest.raises(ecgmodels.InvalidArchitecture, match=rf"{n_params} parameters > max_params {n_params - 1}"):
        spaces.validate_config(config, n_channels=N_CHANNELS, seq_len=SEQ_LEN, max_params=n_params - 1)
    too_much_pooling = {**config, "out_channels": [8, 8], "kernel_sizes": [3, 3], "pool_sizes": [4, 4]}
    with pytest.raises(ecgmodels.InvalidArchitecture, match="pool_sizes"):
        spaces.validate_config(too_much_pooling, n_channels=N_CHANNELS, seq_len=20)
    with pytest.raises(ValueError, match="'family'"):
        spaces.validate_config({"lr": 0.001}, n_channels=N_CHANNELS, seq_len=SEQ_LEN)


def test_sgd_samples_its_own_learning_rate_range() -> None:
    by_optimizer: dict[str, list[float]] = defaultdict(list)
    for config, trial in sample("cnn", 60):
        by_optimizer[config["optimizer"]].append(config["lr"])
        assert ("train_lr_sgd" in trial.params) == (config["optimizer"] == "sgd")
    assert by_optimizer["sgd"] and by_optimizer["adam"] + by_optimizer["adamw"]
    assert all(1e-3 <= lr <= 1e-1 for lr in by_optimizer["sgd"])
    assert all(1e-4 <= lr <= 3e-3 for lr in by_optimizer["adam"] + by_optimizer["adamw"])
