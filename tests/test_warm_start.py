"""Warm starts: an earlier study's best configurations become a new study's first trials, adapted to its space,
each run exactly once even with two workers taking trials at the same time (PostgreSQL)."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

import spaces
from search.cli import main
from search.optimize.warm_start import WARM_START_ATTR, best_source_trials, replay
from studies import load_study_with_definition, open_storage


def test_replay_keeps_what_fits_clamps_numbers_and_drops_what_the_space_lacks() -> None:
    earlier = create_trial(
        value=0.9,
        params={"conv_layers": 9, "train_lr": 0.5, "lstm_hidden": 64, "conv_dropout": 0.2, "train_optimizer": "adamw"},
        distributions={
            "conv_layers": IntDistribution(1, 10),
            "train_lr": FloatDistribution(1e-5, 1.0, log=True),
            "lstm_hidden": IntDistribution(8, 128),
            "conv_dropout": FloatDistribution(0, 0.5),
            "train_optimizer": CategoricalDistribution(["adamw", "sgd"]),
        },
    )
    config = replay(earlier, spaces.get("cnn"), spaces.SpaceContext(n_channels=3, seq_len=2000, fs=200.0))
    assert config.params["conv_dropout"] == 0.2 and config.params["train_optimizer"] == "adamw"
    # Clamped into the cnn space's ranges: at most its deepest conv stack, its largest learning rate.
    assert "conv_layers: 9 -> " in config.adapted[0] and config.params["conv_layers"] < 9
    assert 0 < config.params["train_lr"] < 0.5
    assert config.dropped == ["lstm_hidden"], "the cnn space has no LSTM"


def test_warm_started_study_runs_the_earlier_best_configs_first_once_each_with_two_workers(
    tiny_real_dir, tmp_path, monkeypatch, capsys, postgres_url, start_args
) -> None:
    monkeypatch.chdir(tmp_path)
    earlier_storage = f"sqlite:///{tmp_path / 'earlier.db'}"
    small = ["--space", "cnn", "--epochs", "1", "--max-params", "60000", "--pruner", "none"]
    assert main(start_args(tiny_real_dir, earlier_storage, *small, "--study", "earlier", "--trials", "3")) == 0
    earlier = optuna.load_study(study_name="earlier", storage=open_storage(earlier_storage))
    best_two = best_source_trials(earlier, 2)
    assert len(best_two) == 2

    capsys.readouterr()
    warm = ["--warm-start-from", "earlier", "--warm-start-storage", earlier_storage, "--warm-start-top", "2"]
    args = [*small, "--study", "warm", "--trials", "3", "--workers", "2", *warm]
    assert main(start_args(tiny_real_dir, postgres_url, *args)) == 0
    captured = capsys.readouterr()
    said = " ".join((captured.out + captured.err).split())
    study, definition = load_study_with_definition(open_storage(postgres_url), "warm")
    warm_trials = [t for t in study.get_trials() if WARM_START_ATTR in t.user_attrs]
    assert sorted(t.user_attrs[WARM_START_ATTR] for t in warm_trials) == sorted(
        f"earlier#{t.number}" for t in best_two
    ), "each enqueued config ran exactly once"
    assert {t.number for t in warm_trials} == {0, 1}, "the earlier study's best configs are the first trials"
    by_source = {t.user_attrs[WARM_START_ATTR]: t for t in warm_trials}
    for source in best_two:
        replayed = by_source[f"earlier#{source.number}"]
        assert replayed.state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert replayed.params == source.params, "same space: every parameter taken as it was"
    assert [entry["trial"] for entry in definition.warm_start["taken"]] == [t.number for t in best_two]
    assert len({t.user_attrs["worker_pid"] for t in study.get_trials() if "worker_pid" in t.user_attrs}) == 2
    for source in best_two:
        assert f"trial {source.number} of earlier" in said

    # Resuming does not enqueue them again.
    assert main(start_args(tiny_real_dir, postgres_url, *small, "--study", "warm", "--create-only", *warm)) == 0
    assert len([t for t in study.get_trials() if WARM_START_ATTR in t.user_attrs]) == 2


def test_warm_start_from_a_missing_study_writes_nothing(tiny_real_dir, tmp_path, capsys, start_args) -> None:
    storage = f"sqlite:///{tmp_path / 'new.db'}"
    earlier = f"sqlite:///{tmp_path / 'earlier.db'}"
    assert main(start_args(tiny_real_dir, earlier, "--space", "cnn", "--study", "other", "--create-only")) == 0
    code = main(
        start_args(
            tiny_real_dir, storage, "--space", "cnn", "--warm-start-from", "nope", "--warm-start-storage", earlier
        )
    )
    assert code == 5
    said = " ".join(capsys.readouterr().err.split())
    assert "--warm-start-from 'nope': no such study" in said and "(studies there: other)" in said
    assert optuna.get_all_study_names(storage=open_storage(storage)) == []
