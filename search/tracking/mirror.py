"""The worker's live mirror: one MLflow child run per trial, fed event by event, never in training's way.

Each event (trial started / epoch / trial finished) goes to the trial's spool file first, then the
spool is replayed in order. While the tracking store is down or erroring, events just stay spooled
(calls return in milliseconds) and a later call or `flush()` resends them. Every event is idempotent
against the run's current content (see `runs.apply_update`), so a resend never duplicates anything.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from search.tracking import names, plots
from search.tracking.runs import (
    RunState,
    RunUpdate,
    apply_update,
    clean_key,
    find_or_create_run,
    history_points,
    metric_points,
    now_ms,
    tag_value,
    trial_params,
    update_parent_best,
)
from search.tracking.spool import Spool, TrialSpool
from search.tracking.uri import http_reachable, is_http

log = logging.getLogger(__name__)

# After a failure, events are only spooled for this long before the store is tried again.
RETRY_AFTER_S = 30.0
# A reachability probe that succeeded is trusted for this long.
PROBE_VALID_S = 30.0


def limit_http_retries(timeout_s: float) -> None:
    """MLflow retries a failing request 7 times with exponential backoff (minutes); the mirror spools
    instead, so in its process a request is tried once and waits at most `timeout_s`."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))
    # MLflow prints a "View run … at" line per finished run; worker logs don't need one per trial.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def _rejected(error: BaseException) -> bool:
    """A request the store refuses (4xx): resending it cannot succeed, unlike a store that is down."""
    if not isinstance(error, MlflowException):
        return False
    status = error.get_http_status_code()
    return 400 <= status < 500 and status != 429


class TrialMirror:
    def __init__(
        self,
        *,
        tracking_uri: str,
        study_name: str,
        experiment_id: str,
        parent_run_id: str,
        spool_dir: Path,
        timeout_s: float = 5.0,
        background: bool = False,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.study_name = study_name
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.timeout_s = timeout_s
        self.spool = Spool(Path(spool_dir), study_name)
        if is_http(tracking_uri):
            limit_http_retries(timeout_s)
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self._runs: dict[int, RunState] = {}
        self._down_until = 0.0
        self._probed_ok_at = -math.inf
        # The file lock of a spool excludes other processes, not threads: this lock orders this process's
        # sender thread and its callers.
        self._lock = threading.RLock()
        self._outbox: queue.Queue[int | None] | None = None
        if background:
            # Epoch and finish events are spooled at once (durable) and sent by one thread, so a trial
            # does not wait for MLflow; `trial_started` stays synchronous because it returns the run id.
            self._outbox = queue.Queue()
            threading.Thread(target=self._send_in_background, name="mlflow-mirror", daemon=True).start()

    # ---- the worker's API -------------------------------------------------------------------------

    def trial_started(
        self,
        *,
        trial_number: int,
        trial_id: int,
        params: dict,
        config: dict,
        n_params: int | None,
        tags: dict[str, str],
    ) -> str | None:
        """Create (or find again) the trial's child run with its params and tags; its run id, or None
        when the event was spooled."""
        event = {
            "kind": "started",
            "trial_number": trial_number,
            "trial_id": trial_id,
            "params": params,
            "config": config,
            "n_params": n_params,
            "tags": tags,
        }
        self._submit(trial_number, event)
        state = self._runs.get(trial_number)
        return state.run_id if state is not None and not self.spool.has_pending(trial_number) else None

    def epoch(self, *, trial_number: int, epoch: int, metrics: dict[str, float]) -> None:
        self._submit(trial_number, {"kind": "epoch", "trial_number": trial_number, "epoch": epoch, "metrics": metrics})

    def trial_finished(
        self,
        *,
        trial_number: int,
        state: str,
        value: float | None,
        reason: str | None = None,
        pruned_at_epoch: int | None = None,
        history: list[dict] | None = None,
        confusion_matrix: list[list[int]] | None = None,
        best_value: float | None = None,
        best_trial_number: int | None = None,
    ) -> None:
        event = {
            "kind": "finished",
            "trial_number": trial_number,
            "state": state,
            "value": value,
            "reason": reason,
            "pruned_at_epoch": pruned_at_epoch,
            "history": history,
            "confusion_matrix": confusion_matrix,
            "best_value": best_value,
            "best_trial_number": best_trial_number,
            "end_time_ms": now_ms(),
        }
        self._submit(trial_number, event)
        if self._outbox is None and self._up():
            self.flush()

    def flush(self) -> int:
        """Resend every spooled event of this study, trial by trial, in order; returns how many were sent.

        With a background sender, first waits until it has handled every event queued so far."""
        if self._outbox is not None:
            self._outbox.join()
        with self._lock:
            self._down_until = 0.0
            return self._send_pending()

    def _send_pending(self) -> int:
        sent = 0
        for trial_number in self.spool.pending_trials():
            if not self._up():
                break
            with self.spool.locked(trial_number) as trial_spool:
                sent += self._replay(trial_spool)
        return sent

    def _send_in_background(self) -> None:
        assert self._outbox is not None
        while True:
            trial_number = self._outbox.get()
            try:
                with self._lock:
                    if self._up():
                        with self.spool.locked(trial_number) as trial_spool:
                            self._replay(trial_spool)
                        if self._outbox.empty():
                            self._send_pending()  # catch up on trials spooled while the store was down
            except Exception:  # the mirror must never stop training, nor its own sender
                log.warning("MLflow mirror: sending the events of trial %d failed", trial_number, exc_info=True)
            finally:
                self._outbox.task_done()

    # ---- delivery ---------------------------------------------------------------------------------

    def _submit(self, trial_number: int, event: dict) -> None:
        send_later = self._outbox is not None and event["kind"] != "started"
        try:
            with self._lock, self.spool.locked(trial_number) as trial_spool:
                trial_spool.append(event)
                if not send_later and self._up():
                    self._replay(trial_spool)
            if send_later:
                assert self._outbox is not None
                self._outbox.put(trial_number)
        except Exception:  # the mirror must never stop training
            log.warning("MLflow mirror: could not record an event of trial %d", trial_number, exc_info=True)

    def _up(self) -> bool:
        now = time.monotonic()
        if now < self._down_until:
            return False
        if is_http(self.tracking_uri) and now - self._probed_ok_at > PROBE_VALID_S:
            if not http_reachable(self.tracking_uri, min(self.timeout_s, 1.0)):
                self._mark_down(f"nothing answers at {self.tracking_uri}")
                return False
            self._probed_ok_at = now
        return True

    def _mark_down(self, why: str) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("MLflow mirror: %s; spooling events and retrying in %.0f s", why, RETRY_AFTER_S)
        self._down_until = time.monotonic() + RETRY_AFTER_S
        self._probed_ok_at = -math.inf

    def _replay(self, trial_spool: TrialSpool) -> int:
        events = trial_spool.events()
        sent = 0
        for index, event in enumerate(events):
            try:
                self._apply(event)
            except Exception as error:
                self._runs.pop(event.get("trial_number"), None)  # partly applied: re-read the run next time
                if _rejected(error):
                    log.warning(
                        "MLflow mirror: the tracking store refused an event of trial %s (%s); it is "
                        "kept in %s.rejected",
                        event.get("trial_number"),
                        error,
                        trial_spool.path,
                    )
                    with open(f"{trial_spool.path}.rejected", "a", encoding="utf-8") as rejected:
                        rejected.write(json.dumps(event) + "\n")
                    continue
                self._mark_down(f"{type(error).__name__}: {error}")
                trial_spool.keep_only(events[index:])
                return sent
            sent += 1
        trial_spool.keep_only([])
        return sent

    # ---- events -> MLflow -------------------------------------------------------------------------

    def _apply(self, event: dict) -> None:
        number = int(event["trial_number"])
        state = self._run_state(number, event)
        kind = event["kind"]
        if kind == "started":
            once = {}
            if event.get("n_params") is not None:
                once[names.METRIC_N_PARAMS] = (float(event["n_params"]), 0)
            apply_update(
                self._client,
                state,
                RunUpdate(tags=started_tags(event), params=trial_params(event["params"], event["config"]), once=once),
            )
        elif kind == "epoch":
            apply_update(self._client, state, RunUpdate(points=metric_points(event["epoch"], event["metrics"])))
        elif kind == "finished":
            apply_update(self._client, state, finished_update(event))
            if event.get("best_value") is not None and event.get("best_trial_number") is not None:
                update_parent_best(
                    self._client,
                    self.parent_run_id,
                    trial_number=number,
                    best_value=event["best_value"],
                    best_trial_number=event["best_trial_number"],
                )
        else:
            raise ValueError(f"unknown mirror event kind {kind!r}")

    def _run_state(self, number: int, event: dict) -> RunState:
        state = self._runs.get(number)
        if state is None:
            base = child_tags(self.study_name, number, self.parent_run_id)
            if event["kind"] == "started":  # a new run gets its tags in the same request
                base = {**started_tags(event), **base}
            run, _ = find_or_create_run(
                self._client,
                experiment_id=self.experiment_id,
                match=child_match(self.study_name, number),
                tags=base,
                run_name=names.run_name(number),
            )
            state = self._runs[number] = RunState.from_run(run)
        return state


def child_match(study_name: str, trial_number: int) -> dict[str, str]:
    return {names.TAG_STUDY: study_name, names.TAG_TRIAL_NUMBER: str(trial_number), names.TAG_ROLE: names.ROLE_TRIAL}


def child_tags(study_name: str, trial_number: int, parent_run_id: str) -> dict[str, str]:
    return {**child_match(study_name, trial_number), names.TAG_PARENT_RUN_ID: parent_run_id}


def started_tags(event: dict[str, Any]) -> dict[str, str]:
    tags = {clean_key(k): tag_value(v) for k, v in event["tags"].items()}
    tags[names.TAG_TRIAL_ID] = str(event["trial_id"])
    return tags


def finished_update(event: dict[str, Any]) -> RunUpdate:
    """The end of a trial: state tags and run status, objective, any epochs not yet logged, plots."""
    state = str(event["state"])
    tags = {names.TAG_STATE: state}
    if event.get("pruned_at_epoch") is not None:
        tags[names.TAG_PRUNED_AT_EPOCH] = str(event["pruned_at_epoch"])
    if event.get("reason"):
        tags[names.TAG_FAIL_REASON] = tag_value(event["reason"])
    points = history_points(event.get("history"))
    last_step = max((step for _, step, _ in points), default=0)
    once = {}
    if event.get("value") is not None:
        once[names.METRIC_OBJECTIVE] = (float(event["value"]), last_step)
    artifacts = {}
    if state == "COMPLETE":
        curves = plots.training_curves(event.get("history") or [])
        if curves is not None:
            artifacts[names.ARTIFACT_CURVES] = curves
        if event.get("confusion_matrix"):
            artifacts[names.ARTIFACT_CONFUSION] = plots.confusion_matrix(event["confusion_matrix"])
    return RunUpdate(
        tags=tags,
        points=points,
        once=once,
        artifacts=artifacts,
        status=names.RUN_STATUS_FOR_STATE.get(state, "FAILED"),
        end_time_ms=event.get("end_time_ms"),
    )
