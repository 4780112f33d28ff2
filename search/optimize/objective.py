"""The trial objective: prepare the trial, sample a config, build and check its model, train it, finish.

Each trial is trained from `seed + trial number` (weights and batch order), so a trial's training can be
reproduced from its stored config; which configs a worker proposes is not reproducible (see `worker`).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch

import ecgmodels
import spaces
from search.data import ECGDataset
from search.optimize.events import EventHandler, TrialEvent
from search.optimize.space_context import space_context
from search.tracking.dashboard_note import store_learning_curve
from search.training.config import TrainConfig, split_config
from search.training.cost import CostUnmeasurable, ModelCost, measure_cost
from search.training.curve import curve_value
from search.training.device import seed_everything
from search.training.loop import TrainingDiverged, TrainingRun, fit, fit_lockstep
from studies import BUDGET_STATES, FOLD_VALUES_ATTR, LivenessBeat, StudyDefinition, budget_of, is_infeasible
from studies.attrs import set_user_attrs


class BudgetReached(Exception):
    """Raised inside a trial that another worker's trial already made surplus to the budget."""


class TrialOutOfMemory(RuntimeError):
    """The device ran out of memory for this configuration."""


# Exceptions that fail one trial but never the worker.
TRIAL_FAILURES: tuple[type[Exception], ...] = (
    ecgmodels.InvalidArchitecture,
    TrainingDiverged,
    TrialOutOfMemory,
    BudgetReached,
    CostUnmeasurable,
)
# User attrs a re-queued trial inherits from its original and must not keep.
_PER_RUN_ATTRS = (
    "fail_reason",
    "pruned_at_epoch",
    "history",
    "mlflow_run_id",
    "mlflow_run_url",
    "val_metrics",
    "val_confusion_matrix",
    "worker_label",
    "infeasible",
)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


@dataclass
class _Outcome:
    """How one trial's training ended, filled in as it goes and reported once at the end."""

    family: str
    state: str = "FAIL"
    value: float | None = None
    reason: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def sample_config(trial: optuna.Trial, definition: StudyDefinition, space: Any, context: Any) -> dict[str, Any]:
    """The trial's flat config: the space's sample plus the study's training settings and the trial's seed."""
    config = space(trial, context)
    config.update(
        epochs=definition.epochs,
        objective=definition.objective,
        seed=(definition.seed or 0) + trial.number,
        selection=definition.selection,
        selection_window=definition.selection_window,
    )
    return config


class TrialObjective:
    """Samples a config from the study's space, trains it, reports every epoch, mirrors to MLflow."""

    def __init__(
        self,
        *,
        definition: StudyDefinition,
        splits: Sequence[ECGDataset],
        device: torch.device,
        mirror: Any | None = None,
        on_event: EventHandler | None = None,
        folds_digest: str | None = None,
        liveness_interval_s: float | None = None,
        worker_label: str | None = None,
    ) -> None:
        if not splits:
            raise ValueError("a trial needs at least one split to train on")
        self.definition = definition
        # One normalised split on the device, or one per cross-validation fold (trained in lockstep).
        self.splits = list(splits)
        self.folds_digest = folds_digest  # recorded on each trial: every worker trains on the study's folds
        self.device = device
        self.device_label = describe_device(device)
        self.space = spaces.get(definition.space)
        self.context = space_context(definition)
        self.mirror = mirror
        self.on_event = on_event or (lambda event: None)
        self.host = socket.gethostname()
        # Behind the storage proxy (no Optuna heartbeat): write ecgsearch's liveness mark this often.
        self.liveness_interval_s = liveness_interval_s
        self.worker_label = worker_label  # e.g. the pod's completion index in a Kubernetes Indexed Job
        self.current_trial_id: int | None = None  # the trial this objective runs (or ran last)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        self.current_trial_id = trial._trial_id
        keep_alive = (
            contextlib.nullcontext()
            if self.liveness_interval_s is None
            else LivenessBeat(trial.study._storage, trial._trial_id, self.liveness_interval_s)
        )
        with keep_alive:
            return self._run(trial)

    def _run(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        retried_from = self._prepare(trial)
        config = self._sample(trial)
        family, _model_params, train_config = split_config(config)  # refuses a key no part of the config knows
        model, _n_params = self._validate(trial, config)
        cost = self._measure(trial, family, model)
        if retried_from is not None:  # the original failed (its worker died or was interrupted): end its run
            self.notify_mirror(retried_from)
        self._refuse_infeasible(trial, family, cost)  # before the mirror hears of it: an infeasible trial has no run
        # The mirror writes `mlflow_run_id` / `mlflow_run_url` onto the trial once its run exists.
        self.notify_mirror(trial.number)
        quality = self._train(trial, family, train_config, model)
        if not self.definition.is_multi_objective:
            return quality
        return (quality, *(cost.get(name) for name in self.definition.cost_objectives()))

    def _measure(self, trial: optuna.Trial, family: str, model: torch.nn.Module) -> ModelCost:
        """The model's costs, stored on the trial, and one constraint per limit the study sets.

        A constraint's value is the relative excess `cost / limit - 1` (feasible at <= 0), so no cost's unit
        outweighs another's when the sampler ranks infeasible trials by their total violation.
        """
        data = self.splits[0]
        wanted = self.definition.costs_to_measure()
        try:
            cost = measure_cost(model, family=family, n_channels=data.n_channels, seq_len=data.seq_len, wanted=wanted)
        except CostUnmeasurable as error:
            reason = f"cost not measurable: {error}"
            trial.set_user_attr("fail_reason", reason)
            self.on_event(TrialEvent("finished", trial.number, state="FAIL", family=family, reason=reason))
            raise
        trial.set_user_attr("cost", cost.to_dict())
        for name, limit in self.definition.constraint_limits().items():
            trial.set_constraint(name, cost.get(name) / limit - 1.0)
        return cost

    def _refuse_infeasible(self, trial: optuna.Trial, family: str, cost: ModelCost) -> None:
        """Stop a trial over a limit before any training. It ends PRUNED rather than FAIL: samplers learn
        from PRUNED trials' constraints and ignore FAIL ones; it takes no place in the budget."""
        over = [
            f"{name} {cost.get(name):.4g} > {limit:.4g}"
            for name, limit in self.definition.constraint_limits().items()
            if cost.get(name) > limit
        ]
        if not over:
            return
        reason = "infeasible before training: " + ", ".join(over)
        trial.set_user_attr("infeasible", reason)
        self.on_event(TrialEvent("finished", trial.number, state="PRUNED", family=family, reason=reason))
        raise optuna.TrialPruned(reason)

    def _prepare(self, trial: optuna.Trial) -> int | None:
        """Mark the trial as this worker's, clear what a retried trial inherited; refuse a surplus trial."""
        retried_from = trial.user_attrs.get("retried_from")
        system_retry = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(
            trial.study._storage.get_trial(trial._trial_id)  # the FrozenTrial: the live Trial fails here
        )
        if system_retry is not None:
            retried_from = system_retry
        # A retried trial's inherited per-run attrs are cleared; all of it in one transaction.
        attrs: dict[str, Any] = {key: None for key in _PER_RUN_ATTRS if key in trial.user_attrs}
        attrs.update(worker_host=self.host, worker_pid=os.getpid(), device=self.device_label, epoch=0)
        attrs["heartbeat_at"] = time.time()
        if self.worker_label:
            attrs["worker_label"] = self.worker_label
        if self.folds_digest is not None:
            attrs["cv_folds_digest"] = self.folds_digest
        if retried_from is not None:
            attrs["retried_from"] = int(retried_from)
        set_user_attrs(trial, attrs)
        self._check_budget(trial)
        return None if retried_from is None else int(retried_from)

    def _check_budget(self, trial: optuna.Trial) -> None:
        budget = budget_of(trial.study)
        if budget is None:
            return
        ahead = [
            t
            for t in trial.study.get_trials(deepcopy=False, states=BUDGET_STATES)
            if t.number < trial.number and not is_infeasible(t)
        ]
        if len(ahead) >= budget:
            reason = f"surplus: the study's budget of {budget} trials was already taken by other workers' trials"
            trial.set_user_attr("fail_reason", reason)
            raise BudgetReached(reason)

    def _sample(self, trial: optuna.Trial) -> dict[str, Any]:
        config = sample_config(trial, self.definition, self.space, self.context)
        set_user_attrs(trial, {"config": config, "family": config["family"]})
        return config

    def _validate(self, trial: optuna.Trial, config: dict[str, Any]) -> tuple[torch.nn.Module, int]:
        """The trial's model, built once from the trial's seed; an impossible one fails the trial (an oversized
        one is the constraints' business: `_refuse_infeasible`)."""
        seed_everything(config["seed"])  # the initial weights come from the trial's seed, as in retraining
        try:
            model, n_params = self._build(config)
        except ecgmodels.InvalidArchitecture as error:
            reason = f"invalid architecture: {error}"
            trial.set_user_attr("fail_reason", reason)
            self.on_event(TrialEvent("finished", trial.number, state="FAIL", family=config["family"], reason=reason))
            raise
        trial.set_user_attr("n_params", n_params)
        return model, n_params

    def _build(self, config: dict[str, Any]) -> tuple[torch.nn.Module, int]:
        data = self.splits[0]
        return spaces.build_model(
            config,
            n_channels=data.n_channels,
            seq_len=data.seq_len,
            fs=self.definition.fs,
        )

    def notify_mirror(self, trial_number: int) -> None:
        """Tell the live MLflow mirror a trial changed; it re-reads the trial from the database in the
        background, so call it after writing the trial's attrs (it never blocks, and never decides)."""
        if self.mirror is not None:
            self.mirror.trial_changed(trial_number)

    def _train(self, trial: optuna.Trial, family: str, train_config: TrainConfig, model: torch.nn.Module) -> float:
        outcome = _Outcome(family=family)
        try:
            value, best_metrics = self._fit(trial, train_config, model, outcome)
            outcome.value = value
            trial.set_user_attr("val_metrics", {k: v for k, v in best_metrics.items() if isinstance(v, int | float)})
            if best_metrics.get("val_confusion_matrix") is not None:  # the run's confusion-matrix plot
                trial.set_user_attr("val_confusion_matrix", best_metrics["val_confusion_matrix"])
            outcome.state = "COMPLETE"
            return outcome.value
        except optuna.TrialPruned as pruned:
            outcome.state, outcome.reason = "PRUNED", str(pruned)
            raise
        except torch.OutOfMemoryError as error:
            outcome.reason = f"out of memory on {self.device_label}: {str(error).splitlines()[0]}"
            raise TrialOutOfMemory(outcome.reason) from error
        except TrainingDiverged as error:
            outcome.reason = str(error)
            raise
        except KeyboardInterrupt:
            outcome.reason = "interrupted by the user (Ctrl-C); re-queued to run again"
            trial.study.enqueue_trial(dict(trial.params), user_attrs={"retried_from": trial.number})
            raise
        except Exception as error:
            outcome.reason = f"{type(error).__name__}: {error}"
            raise
        finally:
            self._finish(trial, outcome)

    def _fit(
        self, trial: optuna.Trial, cfg: TrainConfig, model: torch.nn.Module, outcome: _Outcome
    ) -> tuple[float, dict[str, Any]]:
        """Train on the one split, or on every fold in lockstep; the trial's value and the metrics behind it."""
        autoencoder = ecgmodels.is_autoencoder(outcome.family)
        report = self._epoch_reporter(trial, outcome)
        if len(self.splits) == 1:
            result = fit(
                model,
                self.splits[0],
                cfg,
                autoencoder=autoencoder,
                device=self.device,
                on_epoch=report,
                fs=self.definition.fs,
            )
            return float(result.best_value), result.best_metrics
        runs = [
            TrainingRun(fold_model, split, cfg, autoencoder=autoencoder, device=self.device, fs=self.definition.fs)
            for fold_model, split in zip(self._fold_models(model, trial), self.splits, strict=True)
        ]
        fit_lockstep(runs, lambda epoch, per_fold: report(epoch, cross_validated(per_fold, cfg.objective)))
        return self._cross_validated_value(trial, runs, cfg, outcome.history)

    def _fold_models(self, model: torch.nn.Module, trial: optuna.Trial) -> list[torch.nn.Module]:
        """The trial's model for the first fold and a twin of it, same initial weights, for each other fold."""
        config = trial.user_attrs["config"]
        twins = []
        for _ in self.splits[1:]:
            seed_everything(config["seed"])
            twins.append(self._build(config)[0])
        return [model, *twins]

    @staticmethod
    def _cross_validated_value(
        trial: optuna.Trial, runs: Sequence[TrainingRun], cfg: TrainConfig, history: list[dict[str, float]]
    ) -> tuple[float, dict[str, Any]]:
        """The selection rule on the mean curve over folds; the folds' own values and the epoch are stored."""
        mean_curve = [entry[f"val_{cfg.objective}"] for entry in history]
        value, epoch = curve_value(mean_curve, cfg.selection, cfg.selection_window)
        fold_values = [curve_value(run.objective_curve(), cfg.selection, cfg.selection_window)[0] for run in runs]
        trial.set_user_attr("cv_epoch", epoch)  # retraining on all of train+val trains this many epochs
        trial.set_user_attr(FOLD_VALUES_ATTR, fold_values)
        best_metrics: dict[str, Any] = dict(history[epoch - 1])
        # The held-out windows of every fold at that epoch: one confusion matrix over all of train+val.
        best_metrics["val_confusion_matrix"] = _summed([run.history[epoch - 1]["val_confusion_matrix"] for run in runs])
        return float(value), best_metrics

    def _epoch_reporter(self, trial: optuna.Trial, outcome: _Outcome):
        objective_key = f"val_{self.definition.objective}"
        multi_objective = self.definition.is_multi_objective

        def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
            scalars = {
                k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
            }
            outcome.history.append({"epoch": epoch, **scalars})
            value = scalars.get(objective_key, math.nan)
            # Optuna neither records steps nor prunes in a multi-objective study: its trials train every epoch.
            if not multi_objective:
                trial.report(value, epoch)
            # The curves so far, in the database: what the live mirror (and `mlflow-sync`) project per epoch.
            set_user_attrs(trial, {"epoch": epoch, "heartbeat_at": time.time(), "history": outcome.history})
            self.notify_mirror(trial.number)
            self.on_event(
                TrialEvent(
                    "epoch",
                    trial.number,
                    epoch=epoch,
                    epochs=self.definition.epochs,
                    value=value,
                    family=outcome.family,
                )
            )
            # Pruning at the last epoch saves no training and throws a finished value away.
            if not multi_objective and epoch < self.definition.epochs and trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", epoch)
                raise optuna.TrialPruned(f"pruned at epoch {epoch} ({objective_key}={value:.4f})")

        return on_epoch

    def _finish(self, trial: optuna.Trial, outcome: _Outcome) -> None:
        """Store the curve and the reason, tell the display (the worker tells the mirror once the trial ended)."""
        trial.set_user_attr("history", outcome.history)
        store_learning_curve(trial, outcome.history, self.definition)  # shown by optuna-dashboard
        if outcome.reason is not None and outcome.state != "PRUNED":
            trial.set_user_attr("fail_reason", outcome.reason)
        self.on_event(
            TrialEvent(
                "finished",
                trial.number,
                epoch=len(outcome.history),
                epochs=self.definition.epochs,
                value=outcome.value,
                state=outcome.state,
                family=outcome.family,
                reason=outcome.reason,
            )
        )


def cross_validated(per_fold: Sequence[dict[str, float]], objective: str) -> dict[str, float]:
    """One epoch of K folds as one history entry: the mean of every metric over the folds, and each fold's
    objective as `fold<k>_val_<objective>` (so the per-fold curves reach MLflow beside the mean)."""
    keys = [key for key in per_fold[0] if all(key in fold for fold in per_fold)]
    entry = {key: math.fsum(fold[key] for fold in per_fold) / len(per_fold) for key in keys}
    for index, fold in enumerate(per_fold, start=1):
        entry[f"fold{index}_val_{objective}"] = fold[f"val_{objective}"]
    return entry


def _summed(matrices: Sequence[list[list[int]]]) -> list[list[int]]:
    return [[sum(matrix[row][col] for matrix in matrices) for col in range(2)] for row in range(2)]
