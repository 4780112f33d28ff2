"""`ecgsearch storage-proxy` and workers through `grpc://` storage URLs: liveness, the reaper, a killed worker.

Optuna's heartbeat does not pass through its gRPC proxy; ecgsearch's liveness mark and the proxy's reaper
fail a dead worker's trial and queue its copy. The end-to-end test runs a real short search on PostgreSQL
with two workers behind a real proxy process and SIGKILLs one of them mid-training.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.cli import main
from studies import LIVENESS_KEY, StaleTrialReaper, StorageError, is_infeasible, open_storage
from studies.liveness import REAPED_KEY, LivenessBeat
from studies.proxied import LivenessStampingStorage
from studies.storage import open_proxy, proxy_address
from study_fixtures import wait_for_training_trial

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning"),  # ask() stands in for a worker
]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def running_trial(study: optuna.Study, x: float, *, marked: bool = True) -> optuna.Trial:
    """A RUNNING trial with parameter x, with the liveness mark a worker behind the proxy has (or without)."""
    trial = study.ask()
    study._storage.set_trial_param(trial._trial_id, "x", x, optuna.distributions.FloatDistribution(0.0, 1.0))
    if marked:
        study._storage.set_trial_system_attr(trial._trial_id, LIVENESS_KEY, time.time())
    return trial


@pytest.mark.postgres
def test_reaper_fails_a_silent_trial_once_and_queues_one_copy(postgres_url: str) -> None:
    storage = open_storage(postgres_url)
    study = optuna.create_study(study_name="reap", storage=storage)
    silent, alive = running_trial(study, 0.25), running_trial(study, 0.75)
    direct = running_trial(study, 0.5, marked=False)  # a direct-database worker's: Optuna's heartbeat covers it
    clock = Clock()
    # Two reapers (two proxy replicas) see the same silence: only one fails the trial and queues its copy.
    reapers = [StaleTrialReaper(open_storage(postgres_url), grace_period_s=10, clock=clock) for _ in range(2)]
    assert [reaper.sweep() for reaper in reapers] == [[], []]
    clock.now += 6
    study._storage.set_trial_system_attr(alive._trial_id, LIVENESS_KEY, time.time())  # its worker beats
    assert [reaper.sweep() for reaper in reapers] == [[], []]
    clock.now += 6
    reaped = [found for reaper in reapers for found in reaper.sweep()]
    assert [(r.number, r.retried, r.silent_s) for r in reaped] == [(silent.number, True, 12.0)]

    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert by_number[silent.number].state == TrialState.FAIL
    assert by_number[alive.number].state == by_number[direct.number].state == TrialState.RUNNING
    [copy] = [t for t in trials if t.state == TrialState.WAITING]
    assert copy.params == {"x": 0.25}
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(copy) == silent.number
    assert copy.system_attrs[REAPED_KEY] == {"trial": silent.number, "silent_s": 12.0}
    assert LIVENESS_KEY not in copy.system_attrs  # the copy is watched from when it runs, not by the old mark


@pytest.mark.postgres
def test_reaper_stops_retrying_after_the_retry_budget(postgres_url: str) -> None:
    storage = open_storage(postgres_url)
    study = optuna.create_study(study_name="retries", storage=storage)
    running_trial(study, 0.5)
    clock = Clock()
    reaper = StaleTrialReaper(storage, grace_period_s=5, retries=1, clock=clock)
    outcomes = []
    for _ in range(2):  # the original dies, then its one copy dies too
        reaper.sweep()
        clock.now += 6
        outcomes += [r.retried for r in reaper.sweep()]
        if waiting := study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            # A worker takes the copy through the proxy, which stamps it.
            LivenessStampingStorage(storage).set_trial_state_values(waiting[0]._trial_id, TrialState.RUNNING)
    assert outcomes == [True, False]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL]


def test_proxy_storage_stamps_trials_as_they_start_running(tmp_path: Path) -> None:
    stamping = LivenessStampingStorage(open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    study = optuna.create_study(study_name="stamp", storage=stamping)
    study.enqueue_trial({"x": 0.5})
    [waiting] = study.get_trials()
    assert LIVENESS_KEY not in waiting.system_attrs  # queued, not running: nothing to watch yet
    taken = study.ask()  # a worker takes the queued trial
    fresh = study.ask()  # and a new one
    for trial in (taken, fresh):
        assert isinstance(study._storage.get_trial(trial._trial_id).system_attrs[LIVENESS_KEY], float)


def test_liveness_beat_rewrites_the_mark_and_stops_with_the_trial(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="beat", storage=storage)
    trial = study.ask()
    with LivenessBeat(storage, trial._trial_id, interval_s=0.1):
        first = storage.get_trial(trial._trial_id).system_attrs[LIVENESS_KEY]
        time.sleep(0.35)
        assert storage.get_trial(trial._trial_id).system_attrs[LIVENESS_KEY] > first
    study.tell(trial, 1.0)  # the beat has stopped: telling raced with no write


@pytest.mark.parametrize("url", ["grpc://proxy", "grpc://:13000", "grpc://user:pw@proxy:13000", "grpc://h:1/db"])
def test_a_malformed_proxy_address_is_a_storage_error(url: str) -> None:
    with pytest.raises(StorageError, match="grpc://host:port") as raised:
        proxy_address(url)
    assert "pw" not in str(raised.value).replace("grpc://host:port", "")


def test_an_unreachable_proxy_is_a_storage_error_naming_it() -> None:
    with pytest.raises(StorageError, match=r"grpc://127\.0\.0\.1:1'? did not answer within 0\.5 s"):
        open_proxy("grpc://127.0.0.1:1", timeout_s=0.5)


def test_storage_proxy_flags_are_checked(capsys) -> None:
    assert main(["storage-proxy", "--storage", "grpc://127.0.0.1:13000"]) == 2
    assert main(["storage-proxy", "--grace-period", "5", "--reap-interval", "5"]) == 2
    assert "shorter than --grace-period" in capsys.readouterr().err
    assert main(["storage-proxy", "--help"]) == 0
    assert "Example:" in capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ecgsearch(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "search.cli", *args],
        cwd=log.parent,
        env={**os.environ, "ECGSEARCH_THREADS": "1", **(env or {})},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


@pytest.mark.postgres
def test_two_workers_behind_the_proxy_and_a_killed_ones_trial_is_retried(
    tiny_real_dir, tmp_path, postgres_url, start_args
) -> None:
    proxy_url = f"grpc://127.0.0.1:{free_port()}"
    proxy = ecgsearch(
        "storage-proxy", "--port", proxy_url.rpartition(":")[2], "--grace-period", "4", "--reap-interval", "0.5",
        log=tmp_path / "proxy.log", env={"ECGSEARCH_STORAGE": postgres_url},
    )  # fmt: skip
    try:
        open_proxy(proxy_url).close()  # waits until it answers
        create = ["--space", "cnn", "--study", "fleet", "--trials", "3", "--epochs", "6", "--pruner", "none"]
        assert main(start_args(tiny_real_dir, proxy_url, *create, "--max-params", "60000", "--create-only")) == 0
        beat = ["--heartbeat-interval", "1", "--grace-period", "4"]
        workers = [
            ecgsearch("worker", "--study", "fleet", "--storage", proxy_url, "--mlflow-uri", "off", "--no-progress",
                      "--worker-label", str(index), *beat, log=tmp_path / f"worker{index}.log")
            for index in range(2)
        ]  # fmt: skip
        killed = wait_for_training_trial(postgres_url, "fleet", pid=workers[0].pid, log=tmp_path / "worker0.log").number
        study = optuna.load_study(study_name="fleet", storage=open_storage(postgres_url))
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        assert workers[1].wait(timeout=300) == 0, (tmp_path / "worker1.log").read_text()
    finally:
        proxy.send_signal(signal.SIGTERM)  # as Kubernetes stops a pod
        proxy.wait(timeout=20)
    trials = study.get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # The budget: COMPLETE + PRUNED, less architectures over --max-params stopped before training.
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not is_infeasible(t)]) == 3
    assert trials[killed].state == TrialState.FAIL
    reruns = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(reruns) == 1, (tmp_path / "proxy.log").read_text()
    assert reruns[0].state == TrialState.COMPLETE and reruns[0].params == trials[killed].params
    assert reruns[0].user_attrs["retried_from"] == killed and reruns[0].user_attrs["worker_label"] == "1"
    assert f"trial {killed} silent for" in (tmp_path / "proxy.log").read_text()
    assert "postgres@" not in " ".join(proxy.args)  # the database URL travelled in the environment only


def test_a_fleet_label_names_each_spawned_slot_apart() -> None:
    from search.optimize.launcher import Slot, slot_settings
    from search.optimize.settings import WorkerSettings

    labelled = WorkerSettings(study_name="s", storage_url="grpc://proxy:13000", worker_label="7")
    slots = [Slot(0, "0", "gpu0.0"), Slot(1, "0", "gpu0.1")]
    assert [slot_settings(labelled, slot).worker_label for slot in slots] == ["7-gpu0.0", "7-gpu0.1"]
    unlabelled = WorkerSettings(study_name="s", storage_url="grpc://proxy:13000")
    assert slot_settings(unlabelled, slots[0]) is unlabelled
