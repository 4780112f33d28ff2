"""A new study starts from the space's family defaults (spaces/starting.py): the points fit every space they
belong to, are the defaults a user gets without a search, run first and once, and can be switched off."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

import ecgmodels
import spaces
from search.cli import main
from search.optimize.warm_start import STARTING_POINT_ATTR, replay_params
from search.training.config import TrainConfig
from spaces.starting import TRAINING_DEFAULTS
from studies import is_infeasible, open_storage

CONTEXTS = [
    spaces.SpaceContext(n_channels=3, seq_len=2000, fs=360.0),
    spaces.SpaceContext(n_channels=3, seq_len=2000, fs=360.0, patient_ids=True),  # record-relative offered
    spaces.SpaceContext(n_channels=1, seq_len=2000, fs=None),  # no fs: no baseline removal, no rhythm
    spaces.SpaceContext(n_channels=2, seq_len=1000, fs=100.0),
]


@pytest.mark.parametrize("ctx", CONTEXTS, ids=["fs360", "fs360-patients", "no-fs", "fs100"])
@pytest.mark.parametrize("space_name", spaces.names())
def test_every_starting_point_is_taken_whole_by_its_space(space_name: str, ctx: spaces.SpaceContext) -> None:
    space = spaces.get(space_name)
    points = space.starting_points(ctx)
    if not space.offered_families(ctx):  # a space that cannot run on this data (rhythm without fs)
        assert points == []
        return
    assert points, f"space {space_name} has no starting point"
    for name, point in points:
        kept, adapted, dropped = replay_params(point, space, ctx)
        assert (adapted, dropped) == ([], []), f"{space_name}: {name} does not fit its space"
        assert kept == point


@pytest.mark.parametrize("family", ecgmodels.FAMILIES)
def test_the_defaults_point_builds_the_family_defaults(family: str) -> None:
    """Run through the space as a trial, the first point is the family's defaults (the cnn-like stacks'
    kernels as the space can express them: a first and a shared rest)."""
    ctx = CONTEXTS[0]
    space = spaces.get(family)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    (_, defaults), *rest = space.starting_points(ctx)
    study.enqueue_trial(defaults)
    config = space(study.ask(), ctx)
    expected = ecgmodels.default_params(family)
    if "kernel_sizes" in expected:
        first, rest_kernel = expected["kernel_sizes"][:2]
        expected["kernel_sizes"] = [first] + [rest_kernel] * (len(expected["kernel_sizes"]) - 1)
    # How the branch joins and whether it is record-relative are written only when the branch is on.
    unwritten = {"rhythm_fusion", "rhythm_relative"} if "rhythm_branch" in expected else set()
    assert spaces.model_params(config) == {k: v for k, v in expected.items() if k not in unwritten}
    trainer = TrainConfig()
    assert (config["lr"], config["optimizer"], config["batch_size"]) == (trainer.lr, trainer.optimizer, 64)
    assert all(config[key] == 0.0 for key in config if key.startswith("aug_"))
    if "rhythm_branch" in expected:
        (_, with_rhythm), *_ = rest
        study.enqueue_trial(with_rhythm)
        config = space(study.ask(), ctx)
        assert (config["rhythm_branch"], config["rhythm_fusion"], config["rhythm_relative"]) == (True, "average", False)
    else:
        assert rest == []


@pytest.mark.parametrize("space_name", ["cnn", "classifiers", "rhythm"])
def test_with_patient_ids_the_rhythm_points_are_record_relative_or_the_family_default(space_name: str) -> None:
    ctx = spaces.SpaceContext(n_channels=3, seq_len=2000, fs=360.0, patient_ids=True)
    space = spaces.get(space_name)
    configs = []
    for name, point in space.starting_points(ctx):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.enqueue_trial(point)
        configs.append((name, space(study.ask(), ctx)))
    if space_name == "rhythm":  # the family's own default: absolute rate
        assert [config["rhythm_relative"] for _, config in configs] == [False]
        return
    (_, defaults), (name, with_rhythm) = configs
    assert not defaults["rhythm_branch"] and "record-relative" in name
    assert (with_rhythm["rhythm_branch"], with_rhythm["rhythm_fusion"], with_rhythm["rhythm_relative"]) == (
        True,
        "average",
        True,
    )


def test_training_defaults_are_the_trainers() -> None:
    trainer = TrainConfig()
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, value in TRAINING_DEFAULTS.items():
        key = name.removeprefix("train_")
        assert key in fields
        if key == "weight_decay":  # 0 lies outside the sampled log range: its low end stands in
            assert trainer.weight_decay == 0.0 and value == 1e-6
        else:
            assert getattr(trainer, key) == value, key


def test_a_new_study_runs_its_starting_points_first_and_once(tiny_real_dir, tmp_path, start_args, capsys) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    small = ["--space", "cnn", "--epochs", "1", "--pruner", "none", "--study", "s"]
    assert main(start_args(tiny_real_dir, storage, *small, "--trials", "3")) == 0
    # Told as a note, not a warning: nothing is wrong.
    assert "note: starting points enqueued as the first trials: cnn defaults;" in capsys.readouterr().out
    study = optuna.load_study(study_name="s", storage=open_storage(storage))
    # Sampled trials over the parameter limit are pruned outside the budget: only trained ones count.
    trials = [t for t in study.get_trials() if not is_infeasible(t)]
    assert [t.user_attrs.get(STARTING_POINT_ATTR) for t in trials] == [
        "cnn defaults",
        "cnn defaults + rhythm branch (average, record-relative)",  # the data has patient ids
        None,
    ]
    assert trials[0].user_attrs["config"]["out_channels"] == ecgmodels.default_params("cnn")["out_channels"]
    assert trials[1].user_attrs["config"]["rhythm_relative"] is True and trials[1].state.name == "COMPLETE"
    # Resuming the study does not enqueue them again.
    assert main(start_args(tiny_real_dir, storage, *small, "--trials", "4")) == 0
    starting = [t for t in study.get_trials() if STARTING_POINT_ATTR in t.user_attrs]
    assert len(starting) == 2 and len([t for t in study.get_trials() if not is_infeasible(t)]) == 4

    assert (
        main(start_args(tiny_real_dir, storage, *small[:-2], "--study", "t", "--trials", "1", "--no-starting-points"))
        == 0
    )
    other = optuna.load_study(study_name="t", storage=open_storage(storage))
    assert other.get_trials() and not any(STARTING_POINT_ATTR in t.user_attrs for t in other.get_trials())
