"""ecgsearch's own liveness of a running trial, for storages without Optuna's heartbeat (the gRPC proxy).

Optuna's heartbeat lives in RDBStorage only; `GrpcStorageProxy` is a plain `BaseStorage`, so a worker
behind `ecgsearch storage-proxy` sends none and a killed worker's trial would stay RUNNING forever.
Instead:

- the proxy stamps `LIVENESS_KEY` (a system attribute: wall-clock seconds) on every trial that starts
  running through it, so a worker killed before its first beat is still covered;
- the worker re-writes it every heartbeat interval while the trial runs (`LivenessBeat`, a thread, so
  epochs longer than the grace period do not look dead);
- the proxy's `StaleTrialReaper` fails a RUNNING trial whose mark has not changed for the grace period
  and queues one copy with the same parameters, exactly as Optuna's heartbeat retry does.

Staleness is judged by the reaper's own monotonic clock (how long the mark stayed unchanged), never by
comparing the worker's wall clock with the reaper's: pods' clocks may disagree. Failing goes through the
storage's row-locked state change, so of two reapers only one fails a trial and queues its retry.
Trials that run against the database directly never carry the mark and are left to Optuna's heartbeat.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

LIVENESS_KEY = "ecgsearch_liveness"
# On the FAIL trial's retry: which trial the reaper failed and how long it had been silent.
REAPED_KEY = "ecgsearch_reaped"


def has_storage_heartbeat(storage: BaseStorage) -> bool:
    """Whether Optuna's own heartbeat covers trials on `storage` (RDBStorage with an interval)."""
    return is_heartbeat_enabled(storage)


def mark_alive(storage: BaseStorage, trial_id: int) -> bool:
    """Write the liveness mark now; False once the trial has finished (nothing more to keep alive)."""
    try:
        storage.set_trial_system_attr(trial_id, LIVENESS_KEY, time.time())
    except UpdateFinishedTrialError:
        return False
    return True


class LivenessBeat:
    """While a trial runs: the liveness mark every `interval_s`, from a daemon thread (context manager).

    A failed write (the proxy restarting, a network blip) is logged and retried at the next beat; the
    reaper's grace period spans several beats, so one lost beat does not fail a live trial.
    """

    def __init__(self, storage: BaseStorage, trial_id: int, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.storage, self.trial_id, self.interval_s = storage, trial_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ecgsearch-liveness-{trial_id}", daemon=True)

    def __enter__(self) -> LivenessBeat:
        mark_alive(self.storage, self.trial_id)  # marked before the trial's work starts, not a beat later
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not mark_alive(self.storage, self.trial_id):
                    return
            except Exception as error:  # a lost beat is not fatal; the next one may get through
                log.warning("liveness of trial id %s not written: %s", self.trial_id, error)


@dataclass(frozen=True)
class ReapedTrial:
    study_name: str
    number: int
    silent_s: float
    retried: bool  # False: the trial already had its `retries` copies


@dataclass
class _Seen:
    mark: object
    since: float  # monotonic seconds when the reaper last saw the mark change


class StaleTrialReaper:
    """Fails RUNNING trials whose liveness mark stayed unchanged for `grace_period_s`, and retries each once.

    `sweep()` looks at every study of the storage once; call it every few seconds (the proxy does).
    A trial first seen by a freshly started reaper gets the full grace period from that moment.
    """

    def __init__(
        self,
        storage: BaseStorage,
        *,
        grace_period_s: float,
        retries: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if grace_period_s <= 0 or retries < 0:
            raise ValueError(f"need grace_period_s > 0 and retries >= 0, got {grace_period_s}, {retries}")
        self.storage, self.grace_period_s, self.retries, self.clock = storage, grace_period_s, retries, clock
        self._seen: dict[int, _Seen] = {}

    def sweep(self) -> list[ReapedTrial]:
        now = self.clock()
        running: set[int] = set()
        reaped = []
        for study in self.storage.get_all_studies():
            trials = self.storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,))
            for trial in trials:
                if LIVENESS_KEY not in trial.system_attrs:
                    continue  # runs against the database directly: Optuna's heartbeat covers it
                running.add(trial._trial_id)
                seen = self._seen.get(trial._trial_id)
                mark = trial.system_attrs[LIVENESS_KEY]
                if seen is None or seen.mark != mark:
                    self._seen[trial._trial_id] = _Seen(mark, now)
                elif now - seen.since > self.grace_period_s:
                    outcome = self._reap(study.study_name, trial, now - seen.since)
                    if outcome is not None:
                        reaped.append(outcome)
        # Forget finished trials, so a long-lived proxy does not grow with the study.
        self._seen = {trial_id: seen for trial_id, seen in self._seen.items() if trial_id in running}
        return reaped

    def _reap(self, study_name: str, trial: FrozenTrial, silent_s: float) -> ReapedTrial | None:
        try:
            if not self.storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                return None
        except UpdateFinishedTrialError:  # its worker finished it, or another reaper failed it first
            return None
        self._seen.pop(trial._trial_id, None)
        retried = self._enqueue_retry(study_name, trial, silent_s)
        log.warning(
            "study %s: trial %d silent for %.0f s (no liveness from its worker): failed%s",
            study_name,
            trial.number,
            silent_s,
            ", a copy is queued" if retried else f", not retried (it had {self.retries} retries)",
        )
        return ReapedTrial(study_name, trial.number, round(silent_s, 1), retried)

    def _enqueue_retry(self, study_name: str, trial: FrozenTrial, silent_s: float) -> bool:
        """One WAITING copy with the same parameters, via Optuna's own retry callback (same system attrs,
        so `RetryHeartbeatStaleTrialCallback.retried_trial_number` names the original); False when the
        configuration already had its `retries` copies."""
        original = copy.deepcopy(self.storage.get_trial(trial._trial_id))
        if len(original.system_attrs.get("retry_history", [])) >= self.retries:
            return False
        attrs = {key: value for key, value in original.system_attrs.items() if key not in (LIVENESS_KEY, REAPED_KEY)}
        attrs[REAPED_KEY] = {"trial": trial.number, "silent_s": round(silent_s, 1)}
        original.system_attrs = attrs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.load_study(study_name=study_name, storage=self.storage)
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=self.retries)(study, original)
        return True


def run_reaper(reaper: StaleTrialReaper, *, interval_s: float, stop: threading.Event) -> None:
    """Sweep every `interval_s` until `stop` is set; a failing sweep (database restarting) is logged, retried."""
    while not stop.wait(interval_s):
        try:
            reaper.sweep()
        except Exception as error:
            log.warning("stale-trial sweep failed (retrying in %g s): %s", interval_s, error)
