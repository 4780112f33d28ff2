"""The trial objective: prepare the trial, sample a config, build and check its model, train it, finish.

Each trial is trained from `seed + trial number` (weights and batch order), so a trial's training can be
reproduced from its stored config; which configs a worker proposes is not reproducible (see `worker`).
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch

import ecgmodels
import spaces
from search.data import ECGDataset
from search.optimize.events import EventHandler, TrialEvent
from search.training.config import TrainConfig, split_config
from search.training.device import seed_everything
from search.training.loop import TrainingDiverged, fit
from studies import BUDGET_STATES, StudyDefinition, budget_of


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


class TrialObjective:
    """Samples a config from the study's space, trains it, reports every epoch, mirrors to MLflow."""

    def __init__(
        self,
        *,
        definition: StudyDefinition,
        data: ECGDataset,
        device: torch.device,
        mirror: Any | None = None,
        on_event: EventHandler | None = None,
    ) -> None:
        self.definition = definition
        self.data = data
        self.device = device
        self.device_label = describe_device(device)
        self.space = spaces.get(definition.space)
        self.context = spaces.SpaceContext(n_channels=data.n_channels, seq_len=data.seq_len)
        self.mirror = mirror
        self.on_event = on_event or (lambda event: None)
        self.host = socket.gethostname()

    def __call__(self, trial: optuna.Trial) -> float:
        retried_from = self._prepare(trial)
        config = self._sample(trial)
        family, _model_params, train_config = split_config(config)  # refuses a key no part of the config knows
        model, _n_params = self._validate(trial, config)
        # The mirror writes `mlflow_run_id` / `mlflow_run_url` onto the trial once its run exists.
        self.notify_mirror(trial.number)
        if retried_from is not None:  # the original failed (its worker died or was interrupted): end its run too
            self.notify_mirror(retried_from)
        return self._train(trial, family, train_config, model)

    def _prepare(self, trial: optuna.Trial) -> int | None:
        """Mark the trial as this worker's, clear what a retried trial inherited; refuse a surplus trial."""
        retried_from = trial.user_attrs.get("retried_from")
        system_retry = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(
            trial.study._storage.get_trial(trial._trial_id)  # the FrozenTrial: the live Trial fails here
        )
        if system_retry is not None:
            retried_from = system_retry
        for key in _PER_RUN_ATTRS:
            if key in trial.user_attrs:
                trial.set_user_attr(key, None)
        trial.set_user_attr("worker_host", self.host)
        trial.set_user_attr("worker_pid", os.getpid())
        trial.set_user_attr("device", self.device_label)
        trial.set_user_attr("epoch", 0)
        trial.set_user_attr("heartbeat_at", time.time())
        if retried_from is not None:
            trial.set_user_attr("retried_from", int(retried_from))
        self._check_budget(trial)
        return None if retried_from is None else int(retried_from)

    def _check_budget(self, trial: optuna.Trial) -> None:
        budget = budget_of(trial.study)
        if budget is None:
            return
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=BUDGET_STATES) if t.number < trial.number]
        if len(ahead) >= budget:
            reason = f"surplus: the study's budget of {budget} trials was already taken by other workers' trials"
            trial.set_user_attr("fail_reason", reason)
            raise BudgetReached(reason)

    def _sample(self, trial: optuna.Trial) -> dict[str, Any]:
        definition = self.definition
        config = self.space(trial, self.context)
        config.update(
            epochs=definition.epochs, objective=definition.objective, seed=(definition.seed or 0) + trial.number
        )
        trial.set_user_attr("config", config)
        trial.set_user_attr("family", config["family"])
        return config

    def _validate(self, trial: optuna.Trial, config: dict[str, Any]) -> tuple[torch.nn.Module, int]:
        """The trial's model, built once from the trial's seed; an impossible or oversized one fails the trial."""
        seed_everything(config["seed"])  # the initial weights come from the trial's seed, as in retraining
        try:
            model, n_params = spaces.build_model(
                config,
                n_channels=self.data.n_channels,
                seq_len=self.data.seq_len,
                max_params=self.definition.max_params,
            )
        except ecgmodels.InvalidArchitecture as error:
            reason = f"invalid architecture: {error}"
            trial.set_user_attr("fail_reason", reason)
            self.on_event(TrialEvent("finished", trial.number, state="FAIL", family=config["family"], reason=reason))
            raise
        trial.set_user_attr("n_params", n_params)
        return model, n_params

    def notify_mirror(self, trial_number: int) -> None:
        """Tell the live MLflow mirror a trial changed; it re-reads the trial from the database in the
        background, so call it after writing the trial's attrs (it never blocks, and never decides)."""
        if self.mirror is not None:
            self.mirror.trial_changed(trial_number)

    def _train(self, trial: optuna.Trial, family: str, train_config: TrainConfig, model: torch.nn.Module) -> float:
        outcome = _Outcome(family=family)
        try:
            result = fit(
                model,
                self.data,
                train_config,
                autoencoder=ecgmodels.is_autoencoder(family),
                device=self.device,
                on_epoch=self._epoch_reporter(trial, outcome),
            )
            outcome.value = float(result.best_value)
            trial.set_user_attr(
                "val_metrics", {k: v for k, v in result.best_metrics.items() if isinstance(v, int | float)}
            )
            if result.best_metrics.get("val_confusion_matrix") is not None:  # the run's confusion-matrix plot
                trial.set_user_attr("val_confusion_matrix", result.best_metrics["val_confusion_matrix"])
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

    def _epoch_reporter(self, trial: optuna.Trial, outcome: _Outcome):
        objective_key = f"val_{self.definition.objective}"

        def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
            scalars = {
                k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
            }
            outcome.history.append({"epoch": epoch, **scalars})
            value = scalars.get(objective_key, math.nan)
            trial.report(value, epoch)
            trial.set_user_attr("epoch", epoch)
            trial.set_user_attr("heartbeat_at", time.time())
            # The curves so far, in the database: what the live mirror (and `mlflow-sync`) project per epoch.
            trial.set_user_attr("history", outcome.history)
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
            if trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", epoch)
                raise optuna.TrialPruned(f"pruned at epoch {epoch} ({objective_key}={value:.4f})")

        return on_epoch

    def _finish(self, trial: optuna.Trial, outcome: _Outcome) -> None:
        """Store the curve and the reason, tell the display (the worker tells the mirror once the trial ended)."""
        trial.set_user_attr("history", outcome.history)
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
