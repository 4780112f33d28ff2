"""The launcher: slots on GPUs and CPUs, what a spawned worker sees, per-process sampler seeds, a worker killed
under `start --workers 2`, and no password on any worker's command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.errors import EXIT_WORKER_DIED, UsageError, WorkerDied
from search.optimize import launcher
from search.optimize.launcher import (
    Slot,
    describe_exit,
    plan_slots,
    refuse_deaths,
    runs_in_process,
    slot_environment,
    threads_per_process,
)
from search.optimize.worker import sampler_seed, worker_identity
from studies import open_storage
from study_fixtures import wait_for_training_trial


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(launcher, "cuda_device_count", lambda: count)


def labels(slots: list[Slot]) -> list[tuple[str, str | None]]:
    return [(slot.label, slot.gpu) for slot in slots]


def test_cpu_slots(monkeypatch):
    fake_gpus(monkeypatch, 0)
    assert labels(plan_slots(gpus=None, workers_per_gpu=None, workers=None, device="auto")) == [("cpu0", None)]
    assert labels(plan_slots(gpus=None, workers_per_gpu=None, workers=3, device="auto")) == [
        ("cpu0", None), ("cpu1", None), ("cpu2", None)
    ]  # fmt: skip
    fake_gpus(monkeypatch, 4)
    assert labels(plan_slots(gpus=None, workers_per_gpu=None, workers=2, device="cpu")) == [
        ("cpu0", None),
        ("cpu1", None),
    ]


def test_gpu_slots_see_exactly_the_gpus_asked_for(monkeypatch):
    fake_gpus(monkeypatch, 2)
    # --gpus 1: the slot is GPU 1, not cuda:0 of the launching process.
    [slot] = plan_slots(gpus="1", workers_per_gpu=None, workers=None, device="auto")
    assert (slot.gpu, slot.device, slot_environment(slot)) == ("1", "cuda", {"CUDA_VISIBLE_DEVICES": "1"})
    assert not runs_in_process([slot]), "a GPU slot must run in a process that sees only its GPU"
    assert labels(plan_slots(gpus=None, workers_per_gpu=None, workers=None, device="auto")) == [
        ("gpu0", "0"),
        ("gpu1", "1"),
    ]
    assert labels(plan_slots(gpus="0,1", workers_per_gpu=2, workers=None, device="auto")) == [
        ("gpu0.0", "0"), ("gpu0.1", "0"), ("gpu1.0", "1"), ("gpu1.1", "1")
    ]  # fmt: skip
    # --workers N with CUDA visible and no --gpus: N processes round-robin over the GPUs.
    assert labels(plan_slots(gpus=None, workers_per_gpu=None, workers=3, device="auto")) == [
        ("gpu0.0", "0"), ("gpu1.0", "1"), ("gpu0.1", "0")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("count", "flags", "named"),
    [
        (0, {"gpus": "0"}, "--gpus"),
        (0, {"workers_per_gpu": 2}, "--workers-per-gpu"),
        (2, {"gpus": "2"}, "--gpus"),
        (2, {"gpus": "0,x"}, "--gpus"),
        (2, {"gpus": "all", "workers": 2}, "--workers"),
        (2, {"workers_per_gpu": 2, "workers": 2}, "--workers"),
        (0, {"device": "cuda"}, "--device"),
    ],
)
def test_impossible_plans_are_refused(count, flags, named, monkeypatch):
    fake_gpus(monkeypatch, count)
    arguments = {"gpus": None, "workers_per_gpu": None, "workers": None, "device": "auto", **flags}
    with pytest.raises(UsageError, match=named):
        plan_slots(**arguments)


def test_every_worker_process_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(launcher, "available_cores", lambda: 16)
    assert [threads_per_process(n) for n in (1, 2, 3, 8, 32)] == [16, 8, 5, 2, 1]
    assert threads_per_process(8, override=4) == 4
    assert slot_environment(Slot(0, None, "cpu0")) == {"CUDA_VISIBLE_DEVICES": ""}
    assert runs_in_process([Slot(0, None, "cpu0")]) and not runs_in_process(
        [Slot(0, None, "cpu0"), Slot(1, None, "cpu1")]
    )


def test_sampler_seeds_differ_per_worker_process():
    identities = {worker_identity() for _ in range(3)}
    assert len(identities) == 3, "two workers in one process, one after the other, are different workers"
    seeds = {sampler_seed(0, identity) for identity in identities}
    assert len(seeds) == 3 and all(0 <= seed < 2**32 for seed in seeds)
    assert sampler_seed(0, "host/1/2") == sampler_seed(0, "host/1/2") != sampler_seed(1, "host/1/2")
    assert sampler_seed(None, "host/1/2") is None


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def run_start(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "search.cli", "start", *args],
        cwd=cwd,
        env={**os.environ, "ECGSEARCH_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_worker_is_named_and_exits_7(tiny_real_dir, tmp_path):
    """SIGKILL one of two workers; the other stops at --timeout with the budget unfinished: exit 7, the slot named."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = [
        "--space",
        "cnn",
        "--data",
        str(tiny_real_dir),
        "--storage",
        storage,
        "--mlflow-uri",
        "off",
        "--no-progress",
    ]
    args += ["--trials", "20", "--epochs", "20", "--pruner", "none", "--max-params", "60000", "--workers", "2"]
    # Long enough that a trainable config is drawn and trains (too-large ones fail in milliseconds).
    args += ["--timeout", "15"]
    process = run_start(args, cwd=tmp_path)
    victim = wait_for_training_trial(storage, "cnn", process=process).user_attrs["worker_pid"]
    os.kill(victim, signal.SIGKILL)
    out, err = process.communicate(timeout=600)
    assert process.returncode == EXIT_WORKER_DIED, out + err
    message = " ".join(err.split())
    assert f"(pid {victim}) was killed by SIGKILL" in message and "budget is not finished" in message, err
    assert "Traceback" not in err


def test_sigterm_to_start_stops_every_worker_cleanly(tiny_real_dir, tmp_path):
    """SIGTERM to `start --workers 2` (what `docker compose stop` or Kubernetes sends the launcher): each worker
    gets one SIGINT, fails its running trial cleanly and re-queues it; the launcher exits 130, no worker dies."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["--space", "cnn", "--data", str(tiny_real_dir), "--storage", storage, "--mlflow-uri", "off"]
    args += ["--no-progress", "--trials", "20", "--epochs", "20", "--pruner", "none", "--max-params", "60000"]
    process = run_start([*args, "--workers", "2"], cwd=tmp_path)
    running = wait_for_training_trial(storage, "cnn", process=process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    assert "killed" not in err and "Traceback" not in err, err
    study = optuna.load_study(study_name="cnn", storage=open_storage(storage))
    interrupted = study.trials[running.number]
    assert interrupted.state == TrialState.FAIL and "interrupted" in interrupted.user_attrs["fail_reason"]
    assert not study.get_trials(states=(TrialState.RUNNING,))
    requeued = [t.system_attrs["fixed_params"] for t in study.get_trials(states=(TrialState.WAITING,))]
    assert interrupted.params in requeued


def test_a_dead_worker_fails_the_run_only_when_the_budget_is_unfinished():
    death = describe_exit("worker cpu1 (pid 4321)", -signal.SIGKILL)
    assert death == "worker cpu1 (pid 4321) was killed by SIGKILL"
    assert describe_exit("worker gpu0", 1) == "worker gpu0 exited with code 1 (its error is above)"
    refuse_deaths([death], trials_left=0)  # the others finished the budget: reported, not a failure
    refuse_deaths([], trials_left=3)
    for left in (2, None):
        with pytest.raises(WorkerDied, match=r"cpu1 \(pid 4321\) was killed by SIGKILL") as raised:
            refuse_deaths([death], trials_left=left)
        assert raised.value.exit_code == EXIT_WORKER_DIED == 7


@pytest.mark.postgres
def test_no_password_on_any_command_line_or_output(tiny_real_dir, tmp_path, postgres_url):
    """Storage and MLflow URLs with `user:secret@` (trust auth ignores it; MLflow is down) given through the
    environment: no worker's argv and no output of a `--workers 2` run contains the password."""
    storage = postgres_url.replace("postgres@", "postgres:secret@", 1)
    env = {"ECGSEARCH_STORAGE": storage, "MLFLOW_TRACKING_URI": "http://mlflow:secret@127.0.0.1:1"}
    args = ["--space", "cnn", "--data", str(tiny_real_dir), "--no-progress", "--workers", "2"]
    args += ["--trials", "3", "--epochs", "8", "--pruner", "none", "--max-params", "60000"]
    process = run_start(args, cwd=tmp_path, env=env)
    wait_for_training_trial(postgres_url, "cnn", process=process)
    command_lines = {}
    for pid in [process.pid, *children_of(process.pid)]:
        try:
            command_lines[pid] = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out + err
    assert len(command_lines) >= 3, command_lines  # the launcher and its two workers
    assert not [line for line in command_lines.values() if "secret" in line], command_lines
    assert "secret" not in out + err and "postgres:***@" in out
    written = [path for path in tmp_path.rglob("*") if path.is_file() and b"secret" in path.read_bytes()]
    assert written == []
