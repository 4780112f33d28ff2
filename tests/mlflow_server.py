"""For the MLflow tests: a lean `mlflow server` on a free loopback port, and the check that an experiment holds
exactly the projection of its study database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from search.tracking import names
from search.tracking.projection import was_trained
from search.tracking.runs import find_runs, param_value, tag_value
from studies import best_trial

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A lean `mlflow server` on a loopback port chosen up front (nothing listens until `start`): one worker
    process and no job runner (≈0.5 GB and 3 processes instead of ≈3 GB and 15)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend = f"sqlite:///{folder / 'server.db'}"
        self.artifacts = folder / "artifacts"
        self.log = folder / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if self.process is not None:
            return
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        command = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--workers",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            self.backend,
            "--artifacts-destination",
            str(self.artifacts),
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        self.stop()
        pytest.fail(f"mlflow server not ready after {SERVER_READY_TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and its gunicorn/uvicorn
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
        self.process = None


def snapshot(client: MlflowClient, experiment_id: str, study_name: str, *, timestamps: bool = True) -> dict:
    """Everything the mirror wrote for a study, without run ids; fails on duplicate runs."""
    parents = find_runs(client, experiment_id, {names.TAG_STUDY: study_name, names.TAG_ROLE: names.ROLE_STUDY})
    children = find_runs(client, experiment_id, {names.TAG_STUDY: study_name, names.TAG_ROLE: names.ROLE_TRIAL})
    (parent,) = parents

    def curve(run_id: str, key: str) -> list[tuple]:
        points = client.get_metric_history(run_id, key)
        return sorted((m.step, m.value, m.timestamp) if timestamps else (m.step, m.value) for m in points)

    out: dict = {
        "parent": {
            "tags": {k: v for k, v in parent.data.tags.items() if k.startswith("ecgsearch.")},
            "best_value": curve(parent.info.run_id, names.METRIC_BEST_VALUE),
        }
    }
    numbers = [run.data.tags[names.TAG_TRIAL_NUMBER] for run in children]
    assert len(numbers) == len(set(numbers)), f"duplicate child runs: {sorted(numbers)}"
    for run in children:
        out[int(run.data.tags[names.TAG_TRIAL_NUMBER])] = {
            "name": run.info.run_name,
            "status": run.info.status,
            "times": (run.info.start_time, run.info.end_time) if timestamps else None,
            "tags": {k: v for k, v in run.data.tags.items() if k.startswith(("ecgsearch.", "optuna.trial"))},
            "params": dict(run.data.params),
            "metrics": {key: curve(run.info.run_id, key) for key in run.data.metrics},
            "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id, "plots")),
        }
    return out


def metric_curve(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    """Every point of a run's metric, in step order: duplicates would show as repeated steps."""
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def assert_mirrors_study(client: MlflowClient, study: optuna.Study, experiment_id: str, *, linked: bool) -> None:
    """MLflow holds what the database says, and nothing else: one parent run; one child run per trained trial,
    with its state, tags, params, every per-epoch curve point for point, objective, parameter count and plots;
    the parent's best tags equal to the database's best trial and its `best_value` curve step for step.
    A trial's `mlflow_run_id` user attr, when there is one, names its run; with `linked` every trial has one
    (the mirror writes it only while the trial runs: a run created after the trial ended is found by its tags).
    """
    match = {names.TAG_STUDY: study.study_name}
    (parent,) = find_runs(client, experiment_id, {**match, names.TAG_ROLE: names.ROLE_STUDY})
    children = find_runs(client, experiment_id, {**match, names.TAG_ROLE: names.ROLE_TRIAL})
    trials = [t for t in study.get_trials(deepcopy=False) if was_trained(t)]
    numbers = sorted(int(run.data.tags[names.TAG_TRIAL_NUMBER]) for run in children)
    assert numbers == [t.number for t in trials], "one run per trained trial, no duplicate, no extra"
    runs = {int(run.data.tags[names.TAG_TRIAL_NUMBER]): run for run in children}
    for trial in trials:
        run, attrs = runs[trial.number], trial.user_attrs
        run_id = run.info.run_id
        assert (run.info.run_name, run.info.status) == (
            f"trial-{trial.number}",
            names.RUN_STATUS_FOR_STATE[trial.state.name],
        )
        tags = run.data.tags
        assert tags[names.TAG_PARENT_RUN_ID] == parent.info.run_id
        assert tags[names.TAG_STATE] == trial.state.name
        assert tags[names.TAG_TRIAL_ID] == str(trial._trial_id)
        for attr in ("worker_host", "worker_pid", "device", "family", "retried_from", "pruned_at_epoch", "fail_reason"):
            tag = f"ecgsearch.{attr}"
            assert tags.get(tag) == (tag_value(attrs[attr]) if attrs.get(attr) is not None else None), tag
        expected_params = {k: param_value(v) for k, v in trial.params.items()}
        expected_params.update({f"config.{k}": param_value(v) for k, v in attrs["config"].items()})
        assert run.data.params == expected_params
        history = attrs["history"]
        keys = {key for row in history for key in row if key != "epoch"}
        costs = {f"{names.METRIC_COST_PREFIX}{cost}" for cost in attrs.get("cost") or {}}
        assert set(run.data.metrics) == keys | {"n_params"} | costs | (
            {"objective"} if trial.state == TrialState.COMPLETE else set()
        )
        for key in keys:
            assert metric_curve(client, run_id, key) == [(row["epoch"], row[key]) for row in history if key in row]
        assert metric_curve(client, run_id, "n_params") == [(0, float(attrs["n_params"]))]
        artifacts = sorted(a.path for a in client.list_artifacts(run_id, "plots"))
        if trial.state == TrialState.COMPLETE:
            assert metric_curve(client, run_id, "objective") == [(history[-1]["epoch"], trial.value)]
            assert artifacts == [names.ARTIFACT_CONFUSION, names.ARTIFACT_CURVES]
        else:
            assert artifacts == []
        if linked or attrs.get("mlflow_run_id") is not None:
            assert attrs.get("mlflow_run_id") == run_id
    best = best_trial(study)
    tags = client.get_run(parent.info.run_id).data.tags
    assert (tags.get(names.TAG_BEST_TRIAL_NUMBER), tags.get(names.TAG_BEST_VALUE)) == (
        (str(best.number), repr(best.value)) if best else (None, None)
    )
    finished = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.is_finished()),
        key=lambda t: (t.datetime_complete, t.number),
    )
    sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
    expected_best, so_far = [], None
    for trial in finished:
        if trial.state == TrialState.COMPLETE and (so_far is None or sign * trial.value > sign * so_far):
            so_far = trial.value
        if so_far is not None:
            expected_best.append((trial.number, so_far))
    assert metric_curve(client, parent.info.run_id, names.METRIC_BEST_VALUE) == sorted(expected_best)
