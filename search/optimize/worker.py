"""One worker: load the data once onto its device, then run trials of a study until its budget is spent.

A trial is one pass of `study.optimize(n_trials=1)`, so Optuna's heartbeat thread runs for it and
stale trials of dead workers are failed and re-queued before each new trial. The budget counts
COMPLETE + PRUNED trials on the database, shared by every worker of the study.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

import ecgmodels
import spaces
from search.data import ECGDataset, load_dataset
from search.errors import UsageError
from search.training.config import split_config
from search.training.loop import TrainingDiverged, fit, resolve_device
from studies import (
    BUDGET_STATES,
    StudyDefinition,
    StudyMismatch,
    budget_of,
    check_compatible,
    count_trials,
    load_study_with_definition,
    make_sampler,
    mask_secrets,
    open_storage,
    trials_used,
)

log = logging.getLogger(__name__)


class BudgetReached(Exception):
    """Raised inside a trial that another worker's trial already made surplus to the budget."""


class SpaceExhausted(UsageError):
    """The space keeps producing architectures that cannot be built for this data."""


class TrialOutOfMemory(RuntimeError):
    """The device ran out of memory for this configuration."""


# Exceptions that fail one trial but never the worker.
TRIAL_FAILURES: tuple[type[Exception], ...] = (
    ecgmodels.InvalidArchitecture,
    TrainingDiverged,
    TrialOutOfMemory,
    BudgetReached,
)


@dataclass
class WorkerSettings:
    study_name: str
    storage_url: str
    data_dir: str | None = None  # overrides the path stored in the study (same fingerprint required)
    device: str = "auto"
    mlflow_uri: str | None = None  # resolved tracking URI, or None for no mirroring
    worker_index: int | None = None  # offsets the sampler seed so parallel workers sample differently
    timeout_s: float | None = None
    poll_interval_s: float = 2.0
    heartbeat_interval_s: int = 30
    grace_period_s: int = 90
    max_consecutive_invalid: int = 100
    mirror_close_timeout_s: float = 60.0  # at exit, how long the MLflow mirror may take to catch up


@dataclass
class TrialEvent:
    """What a progress display needs to know, sent after every epoch and at the end of every trial."""

    kind: str  # "epoch" | "finished"
    trial_number: int
    epoch: int = 0
    epochs: int = 0
    value: float | None = None
    state: str | None = None
    family: str | None = None
    reason: str | None = None


@dataclass
class WorkerResult:
    trials_run: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    stopped_because: str = ""


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


class TrialObjective:
    """Samples a config from the study's space, trains it, reports every epoch, mirrors to MLflow."""

    def __init__(
        self,
        *,
        definition: StudyDefinition,
        data: ECGDataset,
        device: torch.device,
        mirror: Any | None = None,
        on_event: Callable[[TrialEvent], None] | None = None,
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

    def notify_mirror(self, trial_number: int) -> None:
        # The mirror re-reads the trial from the database in the background: call after writing its attrs.
        if self.mirror is not None:
            self.mirror.trial_changed(trial_number)

    def _check_budget(self, trial: optuna.Trial) -> None:
        budget = budget_of(trial.study)
        if budget is None:
            return
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=BUDGET_STATES) if t.number < trial.number]
        if len(ahead) >= budget:
            reason = f"surplus: the study's budget of {budget} trials was already taken by other workers' trials"
            trial.set_user_attr("fail_reason", reason)
            raise BudgetReached(reason)

    def __call__(self, trial: optuna.Trial) -> float:
        definition = self.definition
        retried_from = trial.user_attrs.get("retried_from")
        system_retry = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(
            trial.study._storage.get_trial(trial._trial_id)  # the FrozenTrial: the live Trial fails here
        )
        if system_retry is not None:
            retried_from = system_retry
        for key in (
            "fail_reason",
            "pruned_at_epoch",
            "history",
            "mlflow_run_id",
            "mlflow_run_url",
            "val_metrics",
            "val_confusion_matrix",
        ):
            if key in trial.user_attrs:  # a retried trial inherits its original's attrs
                trial.set_user_attr(key, None)
        trial.set_user_attr("worker_host", self.host)
        trial.set_user_attr("worker_pid", os.getpid())
        trial.set_user_attr("device", self.device_label)
        trial.set_user_attr("epoch", 0)
        trial.set_user_attr("heartbeat_at", time.time())
        if retried_from is not None:
            trial.set_user_attr("retried_from", int(retried_from))
        self._check_budget(trial)

        config = self.space(trial, self.context)
        config.update(
            epochs=definition.epochs, objective=definition.objective, seed=(definition.seed or 0) + trial.number
        )
        family, model_params, train_config = split_config(config)
        trial.set_user_attr("config", config)
        trial.set_user_attr("family", family)
        try:
            n_params = spaces.validate_config(
                config,
                n_channels=self.data.n_channels,
                seq_len=self.data.seq_len,
                max_params=definition.max_params,
            )
        except ecgmodels.InvalidArchitecture as error:
            trial.set_user_attr("fail_reason", f"invalid architecture: {error}")
            self.on_event(
                TrialEvent(
                    "finished", trial.number, state="FAIL", family=family, reason=f"invalid architecture: {error}"
                )
            )
            raise
        trial.set_user_attr("n_params", n_params)
        self.notify_mirror(trial.number)  # the mirror writes `mlflow_run_id` / `mlflow_run_url` once the run exists
        if retried_from is not None:  # the original failed (its worker died or was interrupted): end its run too
            self.notify_mirror(int(retried_from))

        objective_key = f"val_{definition.objective}"
        history: list[dict[str, float]] = []

        def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
            scalars = {
                k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
            }
            history.append({"epoch": epoch, **scalars})
            value = scalars.get(objective_key, math.nan)
            trial.report(value, epoch)
            trial.set_user_attr("epoch", epoch)
            trial.set_user_attr("heartbeat_at", time.time())
            # The curves so far, in the database: what the live mirror (and `mlflow-sync`) project per epoch.
            trial.set_user_attr("history", history)
            self.notify_mirror(trial.number)
            self.on_event(
                TrialEvent("epoch", trial.number, epoch=epoch, epochs=definition.epochs, value=value, family=family)
            )
            if trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", epoch)
                raise optuna.TrialPruned(f"pruned at epoch {epoch} ({objective_key}={value:.4f})")

        model = ecgmodels.build(family, n_channels=self.data.n_channels, seq_len=self.data.seq_len, **model_params)
        state, reason, value = "FAIL", None, None
        try:
            result = fit(
                model,
                self.data,
                train_config,
                autoencoder=ecgmodels.is_autoencoder(family),
                device=self.device,
                on_epoch=on_epoch,
            )
            value = float(result.best_value)
            trial.set_user_attr(
                "val_metrics",
                {k: v for k, v in result.best_metrics.items() if isinstance(v, int | float)},
            )
            if result.best_metrics.get("val_confusion_matrix") is not None:  # the run's confusion-matrix plot
                trial.set_user_attr("val_confusion_matrix", result.best_metrics["val_confusion_matrix"])
            state = "COMPLETE"
            return value
        except optuna.TrialPruned as pruned:
            state, reason = "PRUNED", str(pruned)
            raise
        except torch.OutOfMemoryError as error:
            reason = f"out of memory on {self.device_label}: {str(error).splitlines()[0]}"
            raise TrialOutOfMemory(reason) from error
        except TrainingDiverged as error:
            reason = str(error)
            raise
        except KeyboardInterrupt:
            reason = "interrupted by the user (Ctrl-C); re-queued to run again"
            trial.study.enqueue_trial(dict(trial.params), user_attrs={"retried_from": trial.number})
            raise
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            raise
        finally:
            trial.set_user_attr("history", history)
            if reason is not None and state != "PRUNED":
                trial.set_user_attr("fail_reason", reason)
            del model
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.on_event(
                TrialEvent(
                    "finished",
                    trial.number,
                    epoch=len(history),
                    epochs=definition.epochs,
                    value=value,
                    state=state,
                    family=family,
                    reason=reason,
                )
            )


def prepare_data(definition: StudyDefinition, data_dir: str | None, device: torch.device) -> ECGDataset:
    """Load the study's data once, refuse data that differs from the study's, normalise, move to device."""
    path = data_dir or definition.data_path
    dataset = load_dataset(path)
    differences = check_compatible(definition, data_fingerprint=dataset.fingerprint(), versions=current_versions())
    if differences:
        raise StudyMismatch(
            f"refusing to join study: this worker disagrees with what the study was created with "
            f"(data {path}): " + "; ".join(differences)
        )
    normalised, _stats = dataset.normalised()
    return normalised.to(device)


def current_versions() -> dict[str, str]:
    from search import __version__

    return {"ecgsearch": __version__, "optuna": optuna.__version__, "torch": torch.__version__}


def run_worker(
    settings: WorkerSettings,
    *,
    on_event: Callable[[TrialEvent], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    storage: optuna.storages.BaseStorage | None = None,
) -> WorkerResult:
    """Run trials until the study's budget is spent, the timeout passes, or `should_stop()` says so."""
    # The caller's storage when it has one: each open storage holds its own connection pool.
    storage = storage or open_storage(
        settings.storage_url,
        heartbeat_interval=settings.heartbeat_interval_s,
        grace_period=settings.grace_period_s,
    )
    study, definition = load_study_with_definition(storage, settings.study_name)
    device = resolve_device(settings.device)
    data = prepare_data(definition, settings.data_dir, device)

    seed_offset = settings.worker_index if settings.worker_index is not None else os.getpid()
    study.sampler = make_sampler(
        definition.sampler, seed=None if definition.seed is None else definition.seed + 7919 * seed_offset
    )
    mirror = build_mirror(settings, definition, study)
    try:
        return _run_trials(
            settings,
            study,
            definition,
            data,
            TrialObjective(definition=definition, data=data, device=device, mirror=mirror, on_event=on_event),
            should_stop,
        )
    finally:
        if mirror is not None:
            mirror.close(settings.mirror_close_timeout_s)


def _run_trials(
    settings: WorkerSettings,
    study: optuna.Study,
    definition: StudyDefinition,
    data: ECGDataset,
    objective: TrialObjective,
    should_stop: Callable[[], bool],
) -> WorkerResult:
    result = WorkerResult()
    started = time.monotonic()
    consecutive_invalid = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        counts = count_trials(study)
        finished = trials_used(study)
        budget = budget_of(study)
        if budget is not None and finished >= budget:
            result.stopped_because = f"budget of {budget} trials reached"
            break
        if should_stop():
            result.stopped_because = "stopped"
            break
        if settings.timeout_s is not None and time.monotonic() - started >= settings.timeout_s:
            result.stopped_because = f"timeout of {settings.timeout_s:g} s reached"
            break
        if budget is not None and finished + counts.get("RUNNING", 0) >= budget and not counts.get("WAITING"):
            # Other workers hold the rest of the budget; stay until they finish, since one may fail and
            # leave a trial to run again.
            time.sleep(settings.poll_interval_s)
            continue
        trial_id = _optimize_one(study, objective)
        frozen = study._storage.get_trial(trial_id)
        objective.notify_mirror(frozen.number)  # finished: its state and value are in the database now
        result.trials_run += 1
        result.by_state[frozen.state.name] = result.by_state.get(frozen.state.name, 0) + 1
        reason = str(frozen.user_attrs.get("fail_reason") or "")
        if frozen.state == TrialState.FAIL and reason.startswith("invalid architecture"):
            consecutive_invalid += 1
            if consecutive_invalid >= settings.max_consecutive_invalid:
                raise SpaceExhausted(
                    f"space {definition.space!r} produced {consecutive_invalid} invalid architectures in a row "
                    f"(last: {reason}); widen --max-params or check the data's window length "
                    f"({data.seq_len} samples)"
                )
        else:
            consecutive_invalid = 0
    return result


def _optimize_one(study: optuna.Study, objective: TrialObjective) -> int:
    """Run exactly one trial through `study.optimize`, so the heartbeat covers it; return its id."""
    trial_ids: list[int] = []

    def remember(_study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        trial_ids.append(frozen._trial_id)

    study.optimize(objective, n_trials=1, catch=TRIAL_FAILURES, callbacks=[remember], gc_after_trial=False)
    return trial_ids[-1]


def build_mirror(settings: WorkerSettings, definition: StudyDefinition, study: optuna.Study) -> Any | None:
    """The live MLflow mirror of this study, or None when mirroring is off, the study has no experiment, or
    the experiment lives in another tracking store than `settings.mlflow_uri` (`mlflow-sync` writes there)."""
    from search.tracking import TrialMirror, same_store

    if not settings.mlflow_uri or not definition.mlflow_experiment_id or not definition.mlflow_parent_run_id:
        return None
    if not same_store(settings.mlflow_uri, definition.mlflow_tracking_uri):
        log.warning(
            "MLflow: study %s is mirrored to %s, not to %s: no live mirror in this worker; `ecgsearch mlflow-sync "
            "--study %s` writes the study to a tracking store",
            settings.study_name,
            definition.mlflow_tracking_uri,
            mask_secrets(settings.mlflow_uri),
            settings.study_name,
        )
        return None
    return TrialMirror(
        study,
        tracking_uri=settings.mlflow_uri,
        experiment_id=definition.mlflow_experiment_id,
        parent_run_id=definition.mlflow_parent_run_id,
        objective=definition.objective,
    )
