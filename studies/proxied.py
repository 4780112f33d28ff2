"""The storage the gRPC proxy serves: the study database, stamping liveness on every trial that starts through it.

A worker behind the proxy could be killed between Optuna creating its trial and its first liveness beat;
the proxy process stamps the mark at that moment itself (a new RUNNING trial, or a WAITING one a worker
takes), so every trial run through the proxy is watched by the reaper from its first instant. All other
calls pass straight to the database storage, its own optimised queries included.

`serve_proxy` runs Optuna's gRPC proxy server on that storage with the stale-trial reaper beside it.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Container, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from studies.liveness import StaleTrialReaper, mark_alive, run_reaper
from studies.storage import open_storage


class LivenessStampingStorage(BaseStorage):
    """`backend` (the proxy's database storage) with a liveness mark on each trial as it starts running."""

    def __init__(self, backend: BaseStorage) -> None:
        self.backend = backend

    # The two calls through which a trial starts running.
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = self.backend.create_new_trial(study_id, template_trial)
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            mark_alive(self.backend, trial_id)
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        updated = self.backend.set_trial_state_values(trial_id, state, values)
        if updated and state == TrialState.RUNNING:
            mark_alive(self.backend, trial_id)
        return updated

    # Everything else, unchanged.
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self.backend.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self.backend.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self.backend.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.backend.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self.backend.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self.backend.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self.backend.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self.backend.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self.backend.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self.backend.get_all_studies()

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        self.backend.set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self.backend.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self.backend.get_trial_number_from_id(trial_id)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self.backend.set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.backend.set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.backend.set_trial_system_attr(trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self.backend.get_trial(trial_id)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self.backend.get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def get_n_trials(self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        return self.backend.get_n_trials(study_id, state)

    def remove_session(self) -> None:
        self.backend.remove_session()


@dataclass(frozen=True)
class ProxySettings:
    host: str
    port: int
    grace_period_s: float = 90.0  # a trial whose liveness mark stays unchanged this long is failed
    reap_interval_s: float = 5.0  # how often the reaper looks at the running trials
    retries: int = 3  # copies of one configuration after its workers died
    threads: int = 8  # gRPC server threads, as many as the database pool has connections (4 + 4 overflow)


def serve_proxy(storage_url: str, settings: ProxySettings, *, on_start: Callable[[], None] = lambda: None) -> None:
    """Serve the study database at `storage_url` to `grpc://host:port` clients until interrupted.

    The database storage goes through Optuna's cache (`get_storage`): finished trials are read once, then
    served from memory to every worker's sampler. RuntimeError when the address cannot be bound.
    """
    if settings.reap_interval_s <= 0 or settings.grace_period_s <= settings.reap_interval_s:
        raise ValueError(
            f"need 0 < reap interval < grace period, got {settings.reap_interval_s} and {settings.grace_period_s}"
        )
    backend = optuna.storages.get_storage(open_storage(storage_url))
    reaper = StaleTrialReaper(backend, grace_period_s=settings.grace_period_s, retries=settings.retries)
    stop = threading.Event()
    sweeper = threading.Thread(
        target=run_reaper,
        args=(reaper,),
        kwargs={"interval_s": settings.reap_interval_s, "stop": stop},
        name="ecgsearch-reaper",
        daemon=True,
    )
    sweeper.start()
    on_start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.run_grpc_proxy_server(
                LivenessStampingStorage(backend),
                host=settings.host,
                port=settings.port,
                thread_pool=ThreadPoolExecutor(max_workers=settings.threads),
            )
    finally:
        stop.set()
