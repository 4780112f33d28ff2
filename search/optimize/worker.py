"""One worker: the study's data on its device once, then trials of the study until its budget is spent.

A trial is one pass of `study.optimize(n_trials=1)`, so Optuna's heartbeat thread runs for it and stale
trials of dead workers are failed and re-queued before each new trial. The budget counts COMPLETE + PRUNED
trials on the database, shared by every worker of the study.

Sampling is seeded per worker process: the study seed mixed with an identity unique to the process (host,
pid, start time), so every worker, on every machine and in every run, proposes its own configs. Which
configs a study tries is therefore not reproducible across runs; each trial's training is (seed + number).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from search.data import ECGDataset, load_dataset
from search.errors import UsageError
from search.interrupts import raise_swallowed_interrupt
from search.optimize.events import EventHandler
from search.optimize.objective import TRIAL_FAILURES, TrialObjective
from search.optimize.settings import WorkerSettings
from search.optimize.splits import training_splits
from search.tracking.dashboard_note import annotate_trial
from search.training.device import resolve_device
from studies import (
    StudyDefinition,
    StudyMismatch,
    budget_of,
    check_compatible,
    count_budget,
    has_storage_heartbeat,
    load_study_with_definition,
    make_sampler,
    mask_secrets,
    open_existing_storage,
)

log = logging.getLogger(__name__)


class SpaceExhausted(UsageError):
    """The space keeps producing architectures that cannot be built for this data."""


@dataclass
class WorkerResult:
    pid: int = field(default_factory=os.getpid)
    trials_run: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    stopped_because: str = ""


@dataclass
class LoadedStudy:
    """What a process that already opened the study (and maybe loaded its data) hands its in-process worker."""

    study: optuna.Study
    definition: StudyDefinition
    dataset: ECGDataset | None = None  # already checked against the study; None: the worker loads it


def worker_identity(label: str | None = None) -> str:
    """Unique to this worker: its fleet label, host, process and the moment it started (a resume in one process
    differs too). Pods of one Job may share a host name pattern and pid 1; the label tells them apart."""
    return f"{label or ''}/{socket.gethostname()}/{os.getpid()}/{time.time_ns()}"


def sampler_seed(study_seed: int | None, identity: str) -> int | None:
    """The sampler seed of one worker: the study seed mixed with the worker's identity (None stays unseeded)."""
    if study_seed is None:
        return None
    digest = hashlib.sha256(f"{study_seed}/{identity}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def current_versions() -> dict[str, str]:
    from search import __version__

    return {"ecgsearch": __version__, "optuna": optuna.__version__, "torch": torch.__version__}


def refuse_incompatible(definition: StudyDefinition, *, fingerprint: str, data_path: str) -> None:
    """`StudyMismatch` when this process's data or versions differ from what the study was created with."""
    differences = check_compatible(definition, data_fingerprint=fingerprint, versions=current_versions())
    if differences:
        raise StudyMismatch(
            f"refusing to join study: this worker disagrees with what the study was created with "
            f"(data {data_path}): " + "; ".join(differences),
            differences,
        )


def load_study_data(definition: StudyDefinition, data_dir: str | None) -> ECGDataset:
    """The study's data (or `data_dir`), loaded and fingerprinted once, refused when it differs from the study's."""
    path = data_dir or definition.data_path
    dataset = load_dataset(path)
    refuse_incompatible(definition, fingerprint=dataset.fingerprint(), data_path=path)
    return dataset


def run_worker(
    settings: WorkerSettings,
    *,
    device: str,
    on_event: EventHandler | None = None,
    loaded: LoadedStudy | None = None,
) -> WorkerResult:
    """Run trials until the study's budget is spent or the timeout passes; `loaded` skips opening the study."""
    if loaded is None:
        storage = open_existing_storage(
            settings.storage_url,
            heartbeat_interval=settings.heartbeat_interval_s,
            grace_period=settings.grace_period_s,
        )
        study, definition = load_study_with_definition(storage, settings.study_name)
        dataset = None
    else:
        study, definition, dataset = loaded.study, loaded.definition, loaded.dataset
    dataset = dataset or load_study_data(definition, settings.data_dir)
    torch_device = resolve_device(device)
    trained_on = training_splits(dataset, definition, study, torch_device)
    study.sampler = make_sampler(
        definition.sampler, seed=sampler_seed(definition.seed, worker_identity(settings.worker_label))
    )
    mirror = build_mirror(settings, definition, study)
    objective = TrialObjective(
        definition=definition,
        splits=trained_on.splits,
        device=torch_device,
        mirror=mirror,
        on_event=on_event,
        folds_digest=trained_on.folds_digest,
        # Optuna's heartbeat covers a database storage; behind the proxy, ecgsearch's liveness mark does.
        liveness_interval_s=None if has_storage_heartbeat(study._storage) else settings.heartbeat_interval_s,
        worker_label=settings.worker_label,
    )
    try:
        return _run_trials(study, objective, settings, space=definition.space, seq_len=dataset.seq_len)
    finally:
        if mirror is not None:
            mirror.close(settings.mirror_close_timeout_s)


def _run_trials(
    study: optuna.Study, objective: TrialObjective, settings: WorkerSettings, *, space: str, seq_len: int
) -> WorkerResult:
    result = WorkerResult()
    started = time.monotonic()
    consecutive_invalid = 0
    while True:
        raise_swallowed_interrupt()  # one kept while a storage call held the database stops the worker here
        optuna.storages.fail_stale_trials(study)
        # One read for both: the budget used is COMPLETE + PRUNED, less infeasible trials (never trained).
        counts, finished = count_budget(study)
        budget = budget_of(study)
        if budget is not None and finished >= budget:
            result.stopped_because = f"budget of {budget} trials reached"
            return result
        if settings.timeout_s is not None and time.monotonic() - started >= settings.timeout_s:
            result.stopped_because = f"timeout of {settings.timeout_s:g} s reached"
            return result
        if budget is not None and finished + counts.get("RUNNING", 0) >= budget and not counts.get("WAITING"):
            # Other workers hold the rest of the budget; stay until they finish, since one may fail and
            # leave a trial to run again.
            time.sleep(settings.poll_interval_s)
            continue
        frozen = _optimize_one(study, objective)
        objective.notify_mirror(frozen.number)  # finished: its state and value are in the database now
        annotate_trial(study, frozen, objective.definition)  # its optuna-dashboard note
        result.trials_run += 1
        result.by_state[frozen.state.name] = result.by_state.get(frozen.state.name, 0) + 1
        reason = str(frozen.user_attrs.get("fail_reason") or "")
        refused = frozen.state == TrialState.FAIL and reason.startswith("invalid architecture")
        if refused or frozen.user_attrs.get("infeasible"):
            consecutive_invalid += 1
            if consecutive_invalid >= settings.max_consecutive_invalid:
                raise SpaceExhausted(
                    f"space {space!r} produced {consecutive_invalid} invalid or infeasible architectures in a row "
                    f"(last: {reason or frozen.user_attrs.get('infeasible')}); widen the limits (--max-params, "
                    f"--max-flops, --max-latency-ms) or check the data's window length ({seq_len} samples)"
                )
        else:
            consecutive_invalid = 0


def _optimize_one(study: optuna.Study, objective: TrialObjective) -> optuna.trial.FrozenTrial:
    """Run exactly one trial through `study.optimize`, so the heartbeat covers it; return it as stored."""
    trial_ids: list[int] = []

    def remember(_study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        trial_ids.append(frozen._trial_id)

    try:
        study.optimize(objective, n_trials=1, catch=TRIAL_FAILURES, callbacks=[remember], gc_after_trial=False)
    except ValueError:
        # Optuna refuses to tell a trial that is already FAIL: the storage's stale-trial check (heartbeat or
        # the proxy's reaper) failed it while it ran here, and queued its copy. Not this worker's end.
        stolen = study._storage.get_trial(objective.current_trial_id) if objective.current_trial_id else None
        if stolen is None or stolen.state != TrialState.FAIL:
            raise
        log.warning(
            "trial %d was failed by the stale-trial check while it ran here: its liveness came later than the "
            "grace period (keep --heartbeat-interval well below the storage proxy's --grace-period)",
            stolen.number,
        )
        return stolen
    if objective.device.type == "cuda":
        # The trial's model is gone now; hand its memory back to the processes sharing this GPU.
        torch.cuda.empty_cache()
    return study._storage.get_trial(trial_ids[-1])


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
