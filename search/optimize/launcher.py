"""Worker slots: one process per GPU slot (or N CPU processes), each running `ecgsearch worker`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from search.errors import UsageError


@dataclass(frozen=True)
class Slot:
    index: int
    gpu: str | None  # the CUDA device this slot sees as its only device; None on CPU

    @property
    def label(self) -> str:
        return f"gpu{self.gpu}" if self.gpu is not None else f"cpu{self.index}"


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_slots(*, gpus: str | None, workers_per_gpu: int, workers: int, device: str = "auto") -> list[Slot]:
    """Slots for `--gpus all|0,1,…` × `--workers-per-gpu`, else `--workers` CPU (or all-GPU) processes."""
    if workers_per_gpu < 1:
        raise UsageError(f"--workers-per-gpu must be at least 1, got {workers_per_gpu}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    available = cuda_device_count() if device != "cpu" else 0
    if gpus is None:
        if available == 0 or device == "cpu":
            return [Slot(index, None) for index in range(workers)]
        gpus = "all"
    if available == 0:
        raise UsageError(
            f"--gpus {gpus} was given but no CUDA device is visible to PyTorch "
            "(check `nvidia-smi` and that a CUDA build of torch is installed); "
            "drop --gpus to run CPU workers with --workers N"
        )
    if gpus.strip().lower() == "all":
        gpu_ids = [str(index) for index in range(available)]
    else:
        gpu_ids = [part.strip() for part in gpus.split(",") if part.strip()]
        bad = [gpu for gpu in gpu_ids if not gpu.isdigit() or int(gpu) >= available]
        if bad or not gpu_ids:
            raise UsageError(
                f"--gpus {gpus!r}: expected 'all' or comma-separated GPU indices below {available} "
                f"(this machine has {available}); bad: {', '.join(bad) or 'empty list'}"
            )
    slots = []
    for gpu in gpu_ids:
        for _ in range(workers_per_gpu):
            slots.append(Slot(len(slots), gpu))
    return slots


def worker_command(slot: Slot, *, study: str, base_flags: list[str]) -> list[str]:
    device = "cuda" if slot.gpu is not None else "cpu"
    return [
        sys.executable,
        "-m",
        "search.cli",
        "worker",
        "--study",
        study,
        "--worker-index",
        str(slot.index),
        "--device",
        device,
        "--no-progress",
        *base_flags,
    ]


def worker_env(slot: Slot, *, n_slots: int, storage_url: str) -> dict[str, str]:
    env = dict(os.environ)
    # The URL (and any password in it) travels in the environment, never on a command line `ps` shows.
    env["ECGSEARCH_STORAGE"] = storage_url
    if slot.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.gpu
    else:
        # Share the cores rather than oversubscribe them.
        env.setdefault("ECGSEARCH_THREADS", str(max(1, (os.cpu_count() or 1) // n_slots)))
    return env


def run_slots(
    slots: list[Slot],
    *,
    study: str,
    storage_url: str,
    base_flags: list[str],
    on_tick: Callable[[], None] = lambda: None,
    tick_s: float = 1.0,
) -> int:
    """Start one worker process per slot, call `on_tick` while they run; the worst exit code wins."""
    processes = [
        subprocess.Popen(
            worker_command(slot, study=study, base_flags=base_flags),
            env=worker_env(slot, n_slots=len(slots), storage_url=storage_url),
        )
        for slot in slots
    ]
    try:
        while any(process.poll() is None for process in processes):
            on_tick()
            time.sleep(tick_s)
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reaches the children too; forward it in case only we got it, then wait for
        # them to fail their trials cleanly. A second Ctrl-C kills them.
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        try:
            for process in processes:
                process.wait()
        except KeyboardInterrupt:
            for process in processes:
                process.kill()
        raise
    on_tick()
    codes = [process.returncode for process in processes]
    return max(codes, key=lambda code: (code != 0, abs(code)))
