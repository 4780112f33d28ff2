"""This machine's worker slots: one process per GPU slot, or N CPU processes, started from typed settings.

Every slot runs `run_worker`. A single CPU slot runs in the calling process (which may have loaded the
study and its data already); any other plan spawns one process per slot (`multiprocessing`'s spawn
context: CUDA cannot live in forked children). A spawned slot gets its settings through a pipe, never on
a command line, sets `CUDA_VISIBLE_DEVICES` to its one GPU (a CPU slot sees none) and its thread count
before any CUDA call, and reports its result back.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from search.errors import UsageError, WorkerDied
from search.interrupts import raise_swallowed_interrupt
from search.optimize.events import EventHandler
from search.optimize.process import (
    install_second_interrupt_exit,
    launcher_interrupts,
    rebuild_error,
    set_thread_count,
    slot_main,
)
from search.optimize.settings import WorkerSettings
from search.optimize.worker import LoadedStudy, WorkerResult, run_worker


@dataclass(frozen=True)
class Slot:
    index: int
    gpu: str | None  # the physical CUDA device this slot sees as its only one (cuda:0); None on CPU
    label: str

    @property
    def device(self) -> str:
        return "cpu" if self.gpu is None else "cuda"


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_process(n_processes: int, override: int | None = None) -> int:
    """`override`, else this machine's cores shared evenly by its worker processes (at least one each)."""
    return override if override is not None else max(1, available_cores() // n_processes)


def plan_slots(*, gpus: str | None, workers_per_gpu: int | None, workers: int | None, device: str) -> list[Slot]:
    """The slots of this machine. None for a flag means the user did not give it.

    CPU (no CUDA visible, or `--device cpu`): `--workers` processes (1 by default).
    CUDA: `--gpus all|0,1,…` × `--workers-per-gpu` (all GPUs when neither --gpus nor --workers is given);
    `--workers N` without --gpus spreads N processes round-robin over every visible GPU.
    """
    available = 0 if device == "cpu" else cuda_device_count()
    if device == "cuda" and available == 0:
        raise UsageError("--device cuda: no CUDA device is visible to PyTorch on this machine; use cpu or auto")
    if available == 0:
        if gpus is not None:
            raise UsageError(
                f"--gpus {gpus} was given but no CUDA device is visible to PyTorch (check `nvidia-smi` and that "
                "a CUDA build of torch is installed); drop --gpus to run CPU workers with --workers N"
            )
        if workers_per_gpu is not None:
            raise UsageError(
                f"--workers-per-gpu {workers_per_gpu}: no CUDA device is in use on this machine; "
                "use --workers N for CPU worker processes"
            )
        return [Slot(index, None, f"cpu{index}") for index in range(workers or 1)]
    if workers is not None:
        if gpus is not None or workers_per_gpu is not None:
            raise UsageError(
                f"--workers {workers} spreads N processes over every GPU; it cannot be combined with --gpus or "
                "--workers-per-gpu (use --gpus LIST --workers-per-gpu K for a fixed number per GPU)"
            )
        shared = workers > available
        return [
            Slot(index, str(index % available), _gpu_label(index % available, index // available, shared))
            for index in range(workers)
        ]
    per_gpu = workers_per_gpu or 1
    slots = []
    for gpu in _gpu_ids(gpus or "all", available):
        for k in range(per_gpu):
            slots.append(Slot(len(slots), gpu, _gpu_label(gpu, k, per_gpu > 1)))
    return slots


def _gpu_label(gpu: int | str, k: int, shared: bool) -> str:
    return f"gpu{gpu}.{k}" if shared else f"gpu{gpu}"


def _gpu_ids(gpus: str, available: int) -> list[str]:
    if gpus.strip().lower() == "all":
        return [str(index) for index in range(available)]
    ids = [part.strip() for part in gpus.split(",") if part.strip()]
    bad = [gpu for gpu in ids if not gpu.isdigit() or int(gpu) >= available]
    if bad or not ids:
        raise UsageError(
            f"--gpus {gpus!r}: expected 'all' or comma-separated GPU indices below {available} "
            f"(this machine has {available}); bad: {', '.join(bad) or 'empty list'}"
        )
    return ids


def slot_environment(slot: Slot) -> dict[str, str]:
    """What a spawned slot sets before torch touches CUDA: exactly its GPU, or none for a CPU slot."""
    return {"CUDA_VISIBLE_DEVICES": slot.gpu if slot.gpu is not None else ""}


def slot_settings(settings: WorkerSettings, slot: Slot) -> WorkerSettings:
    """A spawned slot's settings: a fleet label gets the slot's own (`3-gpu0`), so each process is named apart."""
    if not settings.worker_label:
        return settings
    return dataclasses.replace(settings, worker_label=f"{settings.worker_label}-{slot.label}")


def runs_in_process(slots: list[Slot]) -> bool:
    """Only a single CPU slot runs in the calling process; a GPU slot always gets a process seeing just its GPU."""
    return len(slots) == 1 and slots[0].gpu is None


@dataclass
class FleetResult:
    results: dict[str, WorkerResult] = field(default_factory=dict)  # by slot label
    deaths: list[str] = field(default_factory=list)  # "worker cpu1 (pid 1234) was killed by SIGKILL"


def run_fleet(
    settings: WorkerSettings,
    slots: list[Slot],
    *,
    loaded: LoadedStudy,
    threads: int | None = None,
    on_event: EventHandler | None = None,
    on_tick: Callable[[], None] = lambda: None,
) -> FleetResult:
    """Run every slot until the study's budget is spent (or the timeout passes); `loaded` is the caller's study.

    A spawned slot that died (a signal, an unexpected exit) is reported in `deaths` when the other slots
    finished the study's budget anyway, and raised as `WorkerDied` when they did not.
    """
    per_process = threads_per_process(len(slots), threads)
    if runs_in_process(slots):
        set_thread_count(per_process)
        restore_handlers = install_second_interrupt_exit()
        try:
            result = run_worker(settings, device=slots[0].device, on_event=on_event, loaded=loaded)
        finally:
            restore_handlers()
        return FleetResult({slots[0].label: result})
    fleet = _spawn(settings, slots, threads=per_process, on_event=on_event)
    with launcher_interrupts():
        fleet.wait(on_tick)
    return fleet.outcome(loaded)


@dataclass
class _Child:
    slot: Slot
    process: multiprocessing.process.BaseProcess
    report: Connection
    message: tuple | None = None

    def collect(self) -> None:
        while self.message is None and self.report.poll():
            try:
                self.message = self.report.recv()
            except EOFError:
                return

    def death(self) -> str | None:
        """How this child ended when it did not report a result; None when it did."""
        if self.message is not None and self.message[0] != "interrupted":
            return None
        name = f"worker {self.slot.label} (pid {self.process.pid})"
        if self.message is not None:
            return f"{name} was interrupted (SIGINT)"
        return describe_exit(name, self.process.exitcode)


def describe_exit(name: str, exitcode: int | None) -> str:
    """`worker cpu1 (pid 1234) was killed by SIGKILL`, or the exit code of a worker that failed on its own."""
    if exitcode is not None and exitcode < 0:
        return f"{name} was killed by {signal.Signals(-exitcode).name}"
    return f"{name} exited with code {exitcode} (its error is above)"


def refuse_deaths(deaths: list[str], trials_left: int | None) -> None:
    """`WorkerDied` (exit 7) when a worker died and the others did not finish the budget (None: no budget)."""
    if deaths and trials_left != 0:
        raise WorkerDied(
            "; ".join(deaths) + ", and the study's budget is not finished. Its running trial is failed and "
            "re-queued once its heartbeat is older than --grace-period; run `ecgsearch worker` (or `start` "
            "again) to finish the budget."
        )


class _Fleet:
    def __init__(self, children: list[_Child]) -> None:
        self.children = children

    def wait(self, on_tick: Callable[[], None], tick_s: float = 1.0) -> None:
        try:
            while alive := [child for child in self.children if child.process.is_alive()]:
                raise_swallowed_interrupt()
                wait([child.process.sentinel for child in alive] + [child.report for child in alive], timeout=tick_s)
                self._collect()
                on_tick()
        except KeyboardInterrupt:
            self._stop()
            raise
        for child in self.children:
            child.process.join()
        self._collect()
        on_tick()

    def _collect(self) -> None:
        for child in self.children:
            child.collect()

    def _stop(self) -> None:
        """Ctrl-C: one SIGINT to each child (its trial fails cleanly and is re-queued); a second Ctrl-C kills."""
        for child in self.children:
            if child.process.is_alive():
                os.kill(child.process.pid, signal.SIGINT)
        try:
            for child in self.children:
                child.process.join()
        except KeyboardInterrupt:
            for child in self.children:
                child.process.kill()

    def outcome(self, loaded: LoadedStudy) -> FleetResult:
        from studies import budget_of, trials_remaining

        result = FleetResult()
        for child in self.children:
            if child.message is not None and child.message[0] == "error":
                raise rebuild_error(*child.message[1:])
            if child.message is not None and child.message[0] == "done":
                result.results[child.slot.label] = child.message[1]
            elif (death := child.death()) is not None:
                result.deaths.append(death)
        if result.deaths:
            refuse_deaths(result.deaths, trials_remaining(loaded.study, budget_of(loaded.study)))
        return result


def _spawn(settings: WorkerSettings, slots: list[Slot], *, threads: int, on_event: EventHandler | None) -> _Fleet:
    context = multiprocessing.get_context("spawn")
    children = []
    for slot in slots:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=slot_main,
            args=(slot_settings(settings, slot), slot.device, slot_environment(slot), threads, on_event, sender),
            name=f"ecgsearch-worker-{slot.label}",
        )
        process.start()
        sender.close()  # the child holds the only sending end: EOF once it is gone
        children.append(_Child(slot, process, receiver))
    return _Fleet(children)
