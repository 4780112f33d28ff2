"""`ecgsearch dashboard`: a real optuna-dashboard process serving a real SQLite study."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from search.report.dashboard import dashboard_url, is_loopback
from studies import create_or_load_study, open_storage

REPO_ROOT = Path(__file__).resolve().parents[1]
# optuna-dashboard answers ≈4 s after start here (STACK.md); CI machines can be slower.
STARTUP_LIMIT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_study(storage_url: str, name: str, make_definition: Callable[..., Any]) -> optuna.Study:
    definition = make_definition(
        data_fingerprint="cd" * 32, seq_len=360, epochs=3, sampler="random", pruner="median", seed=1
    )
    study, _, _ = create_or_load_study(open_storage(storage_url), name, definition)
    distributions = {"family": CategoricalDistribution(["cnn", "cnn_lstm"]), "lr": FloatDistribution(1e-4, 1e-2)}
    for number, state in enumerate([TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]):
        curve = {1: 0.7 + 0.01 * number, 2: 0.75 + 0.01 * number}
        study.add_trial(
            create_trial(
                state=state,
                value=curve[2] if state == TrialState.COMPLETE else None,
                params={"family": ["cnn", "cnn_lstm"][number % 2], "lr": 1e-3 * (number + 1)},
                distributions=distributions,
                intermediate_values=curve,
                user_attrs={"family": ["cnn", "cnn_lstm"][number % 2], "n_params": 1234 + number},
            )
        )
    return study


def start_dashboard(*args: str, cwd: Path, storage_env: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("ECGSEARCH_STORAGE", None)
    if storage_env is not None:
        env["ECGSEARCH_STORAGE"] = storage_env
    return subprocess.Popen(
        [sys.executable, "-m", "search.cli", "dashboard", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(url: str, process: subprocess.Popen) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    while time.monotonic() - started < STARTUP_LIMIT_S:
        if process.poll() is not None:
            pytest.fail(f"dashboard exited with {process.returncode}: {process.stderr.read()}")
        try:
            return httpx.get(url, timeout=2), time.monotonic() - started
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"dashboard did not answer {url} within {STARTUP_LIMIT_S} s")


def stop(process: subprocess.Popen) -> tuple[int, str, str]:
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    try:
        out, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


def test_dashboard_serves_the_study_and_stops_cleanly_on_ctrl_c(tmp_path: Path, make_definition) -> None:
    storage_url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = make_study(storage_url, "ecg-cnn", make_definition)
    port = free_port()
    process = start_dashboard("--storage", storage_url, "--port", str(port), cwd=tmp_path)
    try:
        response, startup_s = wait_for(f"http://127.0.0.1:{port}/api/studies", process)
        assert response.status_code == 200
        summaries = response.json()["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["ecg-cnn"]
        print(f"dashboard answered /api/studies after {startup_s:.1f} s")

        detail = httpx.get(f"http://127.0.0.1:{port}/api/studies/{summaries[0]['study_id']}", timeout=10).json()
        assert [t["number"] for t in detail["trials"]] == [t.number for t in study.trials]
        assert [t["state"] for t in detail["trials"]] == ["Complete", "Pruned", "Complete"]
        assert detail["trials"][1]["intermediate_values"] == [{"step": 1, "value": 0.71}, {"step": 2, "value": 0.76}]
        assert detail["best_trials"][0]["number"] == 2
        assert httpx.get(f"http://127.0.0.1:{port}/dashboard", timeout=10).status_code == 200
    finally:
        code, out, err = stop(process)
    assert code == 0, err
    assert f"open http://127.0.0.1:{port}/dashboard" in out
    assert "Dashboard stopped." in out
    assert "warning" not in err.lower()


@pytest.mark.postgres
def test_public_bind_warns_and_never_prints_the_password(tmp_path: Path, postgres_url: str, make_definition) -> None:
    """A non-loopback --host works but warns; the storage URL (from the env) is printed masked."""
    # Trust authentication ignores the password, so a real URL can carry one to be masked.
    storage_url = postgres_url.replace("postgres@", "postgres:s3cret@", 1)
    database = postgres_url.rsplit("/", 1)[1]
    make_study(storage_url, "on-postgres", make_definition)
    port = free_port()
    process = start_dashboard("--host", "0.0.0.0", "--port", str(port), cwd=tmp_path, storage_env=storage_url)
    try:
        response, _ = wait_for(f"http://127.0.0.1:{port}/api/studies", process)
        assert [s["study_name"] for s in response.json()["study_summaries"]] == ["on-postgres"]
    finally:
        code, out, err = stop(process)
    assert code == 0, err
    assert "no authentication" in " ".join(err.split())
    assert f"open http://127.0.0.1:{port}/dashboard" in out
    assert f"postgresql+psycopg://postgres:***@127.0.0.1:5432/{database}" in out
    assert "s3cret" not in out + err


def test_sigterm_stops_cleanly_too(tmp_path: Path, make_definition) -> None:
    """`docker compose stop` sends SIGTERM; the container must exit 0, not be killed."""
    storage_url = f"sqlite:///{tmp_path / 'studies.db'}"
    make_study(storage_url, "s", make_definition)
    port = free_port()
    process = start_dashboard("--storage", storage_url, "--port", str(port), cwd=tmp_path)
    try:
        wait_for(f"http://127.0.0.1:{port}/api/studies", process)
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err


def test_missing_default_database_is_refused_not_created(tmp_path: Path) -> None:
    process = start_dashboard("--port", str(free_port()), cwd=tmp_path)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 4
    assert "ecgsearch.db" in err and "does not exist" in " ".join(err.split())
    assert not (tmp_path / "ecgsearch.db").exists()


def test_port_in_use_is_a_usage_error(tmp_path: Path, make_definition) -> None:
    storage_url = f"sqlite:///{tmp_path / 'studies.db'}"
    make_study(storage_url, "s", make_definition)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_dashboard("--storage", storage_url, "--port", str(port), cwd=tmp_path)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert f"--port {port}" in " ".join(err.split())


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("10.1.2.3", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_dashboard_url_for_any_interface_points_at_loopback() -> None:
    assert dashboard_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/dashboard"
    assert dashboard_url("::1", 81) == "http://[::1]:81/dashboard"
