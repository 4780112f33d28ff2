"""The worker's live mirror: a background sender that projects the trials it is told about into MLflow.

The worker calls `trial_changed(n)` after it writes a trial's attributes (at its start, after every epoch,
at its end); the call only records the number, so training never waits for MLflow. One thread coalesces
the numbers, re-reads each trial from the study database and writes its run with the one builder
(`projection.trial_run`), then the parent run's best, also from the database. Nothing but trial numbers is
kept: when MLflow is down or errs, the mirror logs one masked warning, waits `retry_after_s`, and the next
pass (or `close`, or `ecgsearch mlflow-sync`) writes each run from the database as it is by then.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from search.tracking.client import describe_error, refused, tracking_client
from search.tracking.projection import was_trained
from search.tracking.sync import Projector
from search.tracking.uri import mlflow_run_link

log = logging.getLogger(__name__)

# While closing, a failed pass is tried again this soon (until the deadline `close` was given).
CLOSING_RETRY_S = 1.0


class TrialMirror:
    """The live MLflow side of one study in one worker process: `trial_changed` from the worker, `close` at
    its exit; everything else happens in the sender thread."""

    def __init__(
        self,
        study: optuna.Study,
        *,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        objective: str,
        timeout_s: float = 5.0,
        retry_after_s: float = 30.0,
    ) -> None:
        self.study = study
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.retry_after_s = retry_after_s
        self._projector = Projector(
            tracking_client(tracking_uri, timeout_s=timeout_s),
            study_name=study.study_name,
            experiment_id=experiment_id,
            parent_run_id=parent_run_id,
            objective=objective,
        )
        self._trial_ids: dict[int, int] = {}
        self._cond = threading.Condition()
        self._pending: set[int] = set()  # changed since the sender last wrote them
        self._unfinished: set[int] = set()  # told about, and not yet mirrored in a finished state
        self._parent_due = False
        self._closing = False
        self._close_deadline = math.inf  # time.monotonic() after which a closing sender gives up
        self._down_until = 0.0  # time.monotonic() before which the store is not tried again
        self._down = False
        self._refused: set[int] = set()  # trials whose last write the store refused (warned once each)
        self._warned: set[int] = set()
        self._thread = threading.Thread(target=self._send_loop, name="mlflow-mirror", daemon=True)
        self._thread.start()

    # ---- the worker's API (never blocks on MLflow) -------------------------------------------------

    def trial_changed(self, trial_number: int) -> None:
        """The trial's row in the database changed: mirror it (soon, from another thread)."""
        with self._cond:
            self._pending.add(trial_number)
            self._unfinished.add(trial_number)
            self._cond.notify()

    def close(self, timeout_s: float = 30.0) -> bool:
        """Write what is pending, plus, once more, every trial whose run is not complete yet and the parent's
        best, trying again (every `CLOSING_RETRY_S`) for at most `timeout_s`; True when MLflow got everything."""
        with self._cond:
            self._closing = True
            self._close_deadline = time.monotonic() + timeout_s
            self._down_until = 0.0
            self._pending |= self._unfinished
            self._parent_due = True
            self._cond.notify()
        self._thread.join(timeout_s + CLOSING_RETRY_S)
        with self._cond:
            left = sorted(self._pending | self._refused | (self._unfinished if self._thread.is_alive() else set()))
            complete = not self._thread.is_alive() and not left and not self._parent_due
        if not complete:
            log.warning(
                "MLflow mirror: %s of study %s not mirrored yet; the study database has everything and "
                "`ecgsearch mlflow-sync --study %s` writes it to MLflow",
                f"trial{'s' if len(left) > 1 else ''} {', '.join(map(str, left))}" if left else "the parent run's best",
                self.study.study_name,
                self.study.study_name,
            )
        return complete

    # ---- the sender thread -------------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    self._cond.wait(self._wait_s())
                if not self._pending and not self._parent_due:
                    return  # closing, and nothing left
                numbers, parent = sorted(self._pending), self._parent_due
                self._pending.clear()
                self._parent_due = False
            if not self._send(numbers, parent) and self._closing and time.monotonic() >= self._close_deadline:
                return  # `close` waited long enough: `mlflow-sync` completes the rest

    def _due(self) -> bool:
        work = self._pending or self._parent_due
        if self._closing and not work:
            return True  # to exit
        return bool(work) and time.monotonic() >= self._down_until

    def _wait_s(self) -> float | None:
        if not (self._pending or self._parent_due):
            return None
        return max(0.0, self._down_until - time.monotonic())

    def _send(self, numbers: list[int], parent: bool) -> bool:
        """Mirror `numbers` (and the parent when due); on a failure, put back what is left and back off."""
        for index, number in enumerate(numbers):
            try:
                parent |= self._mirror_trial(number)
                self._refused.discard(number)
            except Exception as error:  # the mirror never stops training, nor its own sender
                if refused(error):
                    self._refused.add(number)
                    self._warn_refused(number, error)
                    continue
                self._back_off(error, numbers[index:], parent)
                return False
        if parent:
            try:
                self._projector.sync_parent(self.study)
            except Exception as error:
                self._back_off(error, [], True)
                return False
        if self._down:
            self._down = False
            log.warning("MLflow mirror: the tracking store answers again; mirroring study %s", self.study.study_name)
        return True

    def _mirror_trial(self, number: int) -> bool:
        """Write the trial's run from its row in the database; True when the trial has finished."""
        trial = self._read_trial(number)
        if was_trained(trial):
            run_id, _, _ = self._projector.sync_trial(trial)
            self._link(trial, run_id)
        if not trial.state.is_finished():
            return False
        with self._cond:
            self._unfinished.discard(number)
        return True

    def _read_trial(self, number: int) -> FrozenTrial:
        storage = self.study._storage
        if number not in self._trial_ids:
            self._trial_ids[number] = storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        return storage.get_trial(self._trial_ids[number])

    def _link(self, trial: FrozenTrial, run_id: str) -> None:
        """The run's id (and, for a server, its URL) on the trial, for the dashboard and `report`; only while
        the trial runs: Optuna refuses to change a finished trial (its run is found by its tags anyway)."""
        if trial.state != TrialState.RUNNING:
            return
        wanted = {"mlflow_run_id": run_id}
        link = mlflow_run_link(self.tracking_uri, self.experiment_id, run_id)
        if link:
            wanted["mlflow_run_url"] = link
        for key, value in wanted.items():
            if trial.user_attrs.get(key) == value:
                continue
            try:
                self.study._storage.set_trial_user_attr(trial._trial_id, key, value)
            except UpdateFinishedTrialError:
                return

    def _back_off(self, error: BaseException, numbers: list[int], parent: bool) -> None:
        with self._cond:
            self._pending.update(numbers)
            self._parent_due |= parent
            delay = min(self.retry_after_s, CLOSING_RETRY_S) if self._closing else self.retry_after_s
            self._down_until = min(time.monotonic() + delay, self._close_deadline)
            first = not self._down
            self._down = True
        if first:
            log.warning(
                "MLflow mirror: %s; trials go on without it, it retries in %g s (`ecgsearch mlflow-sync "
                "--study %s` completes the runs at any time)",
                describe_error(error, self.tracking_uri),
                self.retry_after_s,
                self.study.study_name,
            )

    def _warn_refused(self, number: int, error: BaseException) -> None:
        if number in self._warned:
            return
        self._warned.add(number)
        log.warning(
            "MLflow mirror: the tracking store refused the run of trial %d (%s); it is tried again at the "
            "trial's next change, and by `ecgsearch mlflow-sync`",
            number,
            describe_error(error, self.tracking_uri),
        )
