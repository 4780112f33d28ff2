"""Multi-objective studies, constraints the sampler learns from, and the Pareto front in `status` and `report`.

The end-to-end searches run on the tiny real MIT-BIH slice with 1–2 epochs; the front's own logic is checked
on a study built from known values, where the answer is known.
"""

from __future__ import annotations

import json
import math

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from torch.utils.flop_counter import FlopCounterMode

import ecgmodels
from search.cli import main
from search.cli.start import parse_objectives
from search.training.cost import count_flops, measure_cost
from search.training.scoring import ScoringModel
from studies import StudyDefinition, is_infeasible, load_study_with_definition, open_storage, pareto_front, trials_used


def test_costs_are_measured_exactly_and_recurrent_layers_are_counted() -> None:
    model = ecgmodels.build("cnn_lstm", n_channels=2, seq_len=400, lstm_hidden=16, bidirectional=False)
    cost = measure_cost(model, family="cnn_lstm", n_channels=2, seq_len=400, wanted={"flops", "latency_ms"})
    assert cost.params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert cost.latency_ms is not None and 0 < cost.latency_ms < 1000
    assert model.training, "measuring puts the model back in training mode"
    # torch's counter does not see into the CPU's LSTM kernel: its FLOPs are added from its shape, a whole
    # number of steps of 4 gates x 2 matrix products.
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        ScoringModel(model.eval(), False)(torch.zeros(1, 2, 400))
    lstm, seen_by_torch = model.lstm, counter.get_total_flops()
    per_step = 2 * 4 * lstm.hidden_size * (lstm.input_size + lstm.hidden_size)
    assert cost.flops > seen_by_torch and (cost.flops - seen_by_torch) % per_step == 0
    assert count_flops(ScoringModel(model, False), torch.zeros(1, 2, 400)) == cost.flops


def test_a_cost_that_cannot_be_measured_fails_the_trial_not_the_worker(monkeypatch) -> None:
    from search.optimize.objective import TRIAL_FAILURES
    from search.training import cost as cost_module

    def no_onnx(*_args, **_kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(cost_module, "onnx_latency_ms", no_onnx)
    model = ecgmodels.build("cnn", n_channels=2, seq_len=400)
    with pytest.raises(cost_module.CostUnmeasurable, match="cnn: RuntimeError: unsupported operator") as raised:
        measure_cost(model, family="cnn", n_channels=2, seq_len=400, wanted={"latency_ms"})
    assert isinstance(raised.value, TRIAL_FAILURES) and model.training


@pytest.mark.parametrize(
    ("text", "expected"),
    [("roc_auc,params", ("roc_auc", "params")), ("latency_ms, f1_macro ,flops", ("f1_macro", "latency_ms", "flops"))],
)
def test_objectives_parse_quality_first(text: str, expected: tuple[str, ...]) -> None:
    assert parse_objectives(text) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--objectives", "roc_auc"], "at least one cost"),
        (["--objectives", "roc_auc,f1_macro,params"], "exactly one quality metric"),
        (["--objectives", "roc_auc,watts"], "unknown objective(s) watts"),
        (["--objectives", "roc_auc,params", "--objective", "f1_macro"], "not both"),
        (["--objectives", "roc_auc,params", "--pruner", "median"], "prunes no multi-objective trial"),
        (["--warm-start-top", "3"], "needs --warm-start-from"),
    ],
)
def test_bad_tradeoff_flags_are_usage_errors_before_anything_is_written(
    argv, message, tiny_real_dir, tmp_path, capsys, start_args
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(start_args(tiny_real_dir, storage, "--space", "cnn", *argv)) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "study.db").exists()


def _trial(values: list[float], params: int, *, infeasible: bool = False) -> optuna.trial.FrozenTrial:
    return create_trial(
        values=values,
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0, 1)},
        user_attrs={"family": "cnn", "n_params": params},
        system_attrs={"constraints:params": 1.0 if infeasible else -0.5},
    )


def test_front_is_the_non_dominated_feasible_trials_cheapest_first() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["val_roc_auc", "params"])
    for values, infeasible in [
        ([0.90, 50_000], False),  # 0: front
        ([0.80, 10_000], False),  # 1: front (cheapest)
        ([0.85, 60_000], False),  # 2: dominated by 0
        ([0.99, 90_000], True),  # 3: best, but infeasible: never on the front
        ([0.92, 80_000], False),  # 4: front (most accurate feasible)
    ]:
        study.add_trial(_trial(values, int(values[1]), infeasible=infeasible))
    assert [t.number for t in pareto_front(study)] == [1, 0, 4]
    # Optuna's own constrained front agrees.
    assert sorted(t.number for t in study.best_trials) == [0, 1, 4]


def test_multi_objective_search_trains_every_epoch_and_shows_the_front(
    tiny_real_dir, tmp_path, monkeypatch, capsys, start_args
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["--space", "cnn", "--study", "mo", "--objectives", "roc_auc,params,latency_ms", "--trials", "4"]
    assert main(start_args(tiny_real_dir, storage, *args, "--epochs", "2", "--max-params", "60000")) == 0
    study, definition = load_study_with_definition(open_storage(storage), "mo")
    assert study.metric_names == ["val_roc_auc", "params", "latency_ms"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    assert definition.pruner == "none" and definition.objective == "roc_auc"
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert trials_used(study) == 4 and len(complete) == 4, "no trial of a multi-objective study is pruned"
    for trial in complete:
        quality, params, latency = trial.values
        assert params == trial.user_attrs["n_params"] == trial.user_attrs["cost"]["params"] <= 60_000
        assert latency == trial.user_attrs["cost"]["latency_ms"] > 0
        assert 0 <= quality <= 1 and len(trial.user_attrs["history"]) == 2
    front = pareto_front(study)
    assert front
    for point in front:  # nothing completed dominates a front point
        assert not any(
            o.values[0] >= point.values[0]
            and o.values[1] <= point.values[1]
            and o.values[2] <= point.values[2]
            and o.values != point.values
            for o in complete
        )

    capsys.readouterr()
    assert main(["status", "--study", "mo", "--storage", storage]) == 0
    shown = capsys.readouterr().out
    assert "Pareto front" in shown and "val_roc_auc" in shown and "latency_ms" in shown
    assert "constraints params <= 60,000" in shown
    assert main(["status", "--storage", storage]) == 0 and "mo" in capsys.readouterr().out
    # Resuming without the flags keeps the study's objectives and its limits.
    assert main(start_args(tiny_real_dir, storage, "--space", "cnn", "--study", "mo", "--create-only")) == 0
    _, resumed = load_study_with_definition(open_storage(storage), "mo")
    assert resumed.objectives == ["roc_auc", "params", "latency_ms"] and resumed.max_params == 60_000
    assert main(["report", "--study", "mo", "--storage", storage, "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Pareto front" in page and 'id="fig-front"' in page and "Quality against cost" in page

    # A point chosen by a rule on the objectives is retrained, and its export carries every objective.
    cheapest = min(complete, key=lambda t: t.values[1])
    rule = f"params<={int(cheapest.values[1])}"
    exported = tmp_path / "export"
    argv = ["retrain", "--study", "mo", "--storage", storage, "--epochs", "1", "--mlflow-uri", "off"]
    assert main([*argv, "--pick", rule, "--out", str(exported)]) == 0
    metrics = json.loads((exported / "metrics.json").read_text())
    assert metrics["trial_number"] == cheapest.number
    assert metrics["objectives"] == ["val_roc_auc", "params", "latency_ms"]
    assert metrics["search_objectives"]["params"] == cheapest.values[1]
    assert metrics["search_objectives"]["latency_ms"] == cheapest.values[2]
    assert metrics["cost"]["params"] == cheapest.values[1] and metrics["cost"]["flops"] > 0
    assert "## Objectives and costs" in (exported / "README.md").read_text()
    capsys.readouterr()
    assert main([*argv, "--pick", "latency_ms<0", "--out", str(tmp_path / "none")]) == 2
    assert "none of the 4 completed feasible trials" in " ".join(capsys.readouterr().err.split())
    assert main([*argv, "--pick", "watts<3", "--trial", "0"]) == 2


def test_constraint_stops_infeasible_architectures_before_training_and_the_sampler_sees_it(
    tiny_real_dir, tmp_path, monkeypatch, start_args
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["--space", "cnn", "--study", "tight", "--trials", "2", "--epochs", "1", "--max-params", "15000"]
    assert main(start_args(tiny_real_dir, storage, *args, "--max-flops", "5000000", "--seed", "3")) == 0
    study = optuna.load_study(study_name="tight", storage=open_storage(storage))
    trials = study.get_trials()
    infeasible = [t for t in trials if is_infeasible(t)]
    assert infeasible, "a limit this tight must reject some of the cnn space"
    for trial in trials:
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            # Every measured trial carries both constraints, as relative excess over the limit.
            cost = trial.user_attrs["cost"]
            assert trial.constraints["params"] == pytest.approx(cost["params"] / 15000 - 1)
            assert trial.constraints["flops"] == pytest.approx(cost["flops"] / 5_000_000 - 1)
    for trial in infeasible:
        assert trial.state == TrialState.PRUNED  # PRUNED, not FAIL: TPE reads PRUNED trials' constraints
        assert trial.user_attrs["infeasible"].startswith("infeasible before training")
        assert not trial.user_attrs.get("history") and not trial.intermediate_values, "trained nothing"
    assert trials_used(study) == 2, "infeasible trials take no place in the budget"
    # What TPE itself does with them: they are ranked as infeasible, below every feasible trial.
    from optuna.samplers._tpe.sampler import _split_trials

    seen = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    below, above = _split_trials(study, seen, 1)
    assert {t.number for t in infeasible} <= {t.number for t in above}
    assert math.isfinite(below[0].value) and not is_infeasible(below[0])


def test_a_study_created_before_multi_objective_search_loads_as_single_objective(make_definition) -> None:
    stored = make_definition(max_params=150_000).to_dict()
    for field in ("objectives", "max_flops", "max_latency_ms", "warm_start", "artifact_dir"):
        del stored[field]
    definition = StudyDefinition.from_dict(stored)
    assert not definition.is_multi_objective
    assert definition.objective_names() == ["roc_auc"] and definition.directions() == ["maximize"]
    assert definition.metric_names() == ["val_roc_auc"]
    assert definition.constraint_limits() == {"params": 150_000.0}
    assert definition.costs_to_measure() == {"params"}


@pytest.mark.parametrize("sampler", ["tpe", "nsgaii"])
def test_multi_objective_samplers_take_pruned_infeasible_trials(sampler: str) -> None:
    """What a worker does, on a toy: constraints on every trial, infeasible ones PRUNED before any value."""
    from studies import make_sampler

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(sampler, seed=0))

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        size = trial.suggest_float("size", 1, 100)
        trial.set_constraint("params", size / 50 - 1)
        if size > 50:
            raise optuna.TrialPruned("infeasible before training")
        return math.log(size), size

    study.optimize(objective, n_trials=30)
    infeasible = [t for t in study.trials if is_infeasible(t)]
    assert infeasible and all(t.state == TrialState.PRUNED for t in infeasible)
    front = pareto_front(study)
    assert front and all(t.values[1] <= 50 for t in front)
    assert {t.number for t in front} == {t.number for t in study.best_trials}
