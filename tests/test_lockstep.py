"""search.training.loop.TrainingRun and fit_lockstep: runs advanced together train exactly as alone."""

from __future__ import annotations

import pytest
import torch

from search.training.device import seed_everything
from search.training.loop import FitResult, TrainingRun, fit, fit_lockstep
from training_toys import DropoutClassifier, make_toy_data, quick

TIMING = {"epoch_seconds", "samples_per_s"}


def dropout_model(seed: int) -> DropoutClassifier:
    seed_everything(seed)
    return DropoutClassifier()


def untimed(result: FitResult) -> list[dict]:
    return [{k: v for k, v in entry.items() if k not in TIMING} for entry in result.history]


def test_runs_in_lockstep_train_exactly_as_each_alone() -> None:
    # Two folds with their own data and seeds; dropout draws from torch's global RNG, which the runs
    # interleave in lockstep: each run must still draw its own sequence.
    folds = [make_toy_data(seed=1), make_toy_data(seed=2)]
    configs = [quick(epochs=3, seed=10, aug_noise=0.1), quick(epochs=3, seed=11, aug_noise=0.1)]
    alone = [fit(dropout_model(i), folds[i], configs[i], autoencoder=False) for i in range(2)]
    runs = [TrainingRun(dropout_model(i), folds[i], configs[i], autoencoder=False) for i in range(2)]
    together = fit_lockstep(runs)
    for a, b in zip(alone, together, strict=True):
        assert untimed(a) == untimed(b)
        assert (a.best_epoch, a.best_value, a.threshold) == (b.best_epoch, b.best_value, b.threshold)
        assert all(torch.equal(a.best_state[name], b.best_state[name]) for name in a.best_state)
    assert untimed(together[0]) != untimed(together[1])


def test_on_epoch_gets_every_runs_metrics_each_round_and_can_stop_them_all() -> None:
    class Pruned(Exception):
        pass

    rounds: list[tuple[int, list[dict]]] = []

    def report_mean(epoch: int, metrics: list[dict]) -> None:
        rounds.append((epoch, metrics))
        mean = sum(m["val_roc_auc"] for m in metrics) / len(metrics)
        assert 0.0 <= mean <= 1.0
        if epoch == 2:
            raise Pruned

    runs = [TrainingRun(dropout_model(i), make_toy_data(seed=i), quick(epochs=5), autoencoder=False) for i in range(3)]
    with pytest.raises(Pruned):
        fit_lockstep(runs, report_mean)
    assert [epoch for epoch, _ in rounds] == [1, 2]
    assert all(len(metrics) == 3 and "val_confusion_matrix" not in metrics[0] for _, metrics in rounds)
    assert [run.epoch for run in runs] == [2, 2, 2]  # all stopped together
    assert rounds[1][1][2]["val_roc_auc"] == runs[2].history[1]["val_roc_auc"]


def test_a_run_out_of_patience_keeps_pace_until_all_are_done() -> None:
    # recall_1 saturates at once, so patience 1 would stop a run alone after epoch 2; its partner has no
    # patience, so both train all 4 epochs and every round reports both.
    data = make_toy_data()
    patient = TrainingRun(dropout_model(0), data, quick(epochs=4, patience=1, objective="recall_1"), autoencoder=False)
    steady = TrainingRun(dropout_model(1), data, quick(epochs=4, objective="recall_1"), autoencoder=False)
    seen: list[int] = []
    results = fit_lockstep([patient, steady], lambda epoch, metrics: seen.append(len(metrics)))
    assert seen == [2, 2, 2, 2] and [len(r.history) for r in results] == [4, 4]
    assert not results[0].stopped_early
    alone = fit(dropout_model(0), data, quick(epochs=4, patience=1, objective="recall_1"), autoencoder=False)
    assert alone.stopped_early and len(alone.history) < 4


def test_lockstep_needs_runs_with_one_epoch_budget() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        fit_lockstep([])
    data = make_toy_data()
    runs = [TrainingRun(dropout_model(0), data, quick(epochs=e), autoencoder=False) for e in (2, 3)]
    with pytest.raises(ValueError, match=r"one epoch budget; got epochs \[2, 3\]"):
        fit_lockstep(runs)


def test_a_run_steps_one_epoch_at_a_time_and_has_no_result_before_its_first() -> None:
    run = TrainingRun(dropout_model(0), make_toy_data(), quick(epochs=2), autoencoder=False)
    with pytest.raises(RuntimeError, match="no epoch"):
        run.result()
    entry = run.step()
    assert entry["epoch"] == run.epoch == 1 and not run.finished
    run.step()
    assert run.finished and run.result().best_epoch == 2
    with pytest.raises(RuntimeError, match="all 2 epochs"):
        run.step()
