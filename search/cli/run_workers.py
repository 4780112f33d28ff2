"""Running a study's workers from `start` and `worker`: in this process, or one process per slot."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from collections.abc import Iterator

from rich.console import Console

from studies import StudyDefinition, mask_secrets

console = Console(highlight=False)


def add_worker_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `start` and `worker`: where workers run and how they stay alive."""
    parser.add_argument(
        "--gpus",
        default=None,
        help="'all' or comma-separated GPU indices: one worker process per GPU slot "
        "(default: all GPUs when CUDA is available, else CPU workers)",
    )
    parser.add_argument(
        "--workers-per-gpu",
        type=int,
        default=1,
        metavar="K",
        help="worker processes per GPU (small models leave a big GPU idle with one)",
    )
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="CPU worker processes when no GPU is used")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="training device for this process's workers"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="stop starting new trials after S seconds (running trials finish)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=int,
        default=30,
        metavar="S",
        help="seconds between a running trial's heartbeats in the database",
    )
    parser.add_argument(
        "--grace-period",
        type=int,
        default=90,
        metavar="S",
        help="a RUNNING trial without a heartbeat for this long is failed and re-queued",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="print one line per trial instead of a live progress bar"
    )
    parser.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)


def install_second_interrupt_exit() -> None:
    """First Ctrl-C: KeyboardInterrupt, the running trial fails cleanly. Second: exit at once."""

    def on_interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)


def apply_thread_limit() -> None:
    threads = os.environ.get("ECGSEARCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))


def run_study_workers(
    args: argparse.Namespace,
    *,
    study_name: str,
    storage_url: str,
    mlflow_uri: str | None,
    data_dir: str | None,
    storage: object | None = None,
) -> int:
    """Run this machine's workers on the study until its budget is spent; returns the exit code."""
    previous_handler = signal.getsignal(signal.SIGINT)
    install_second_interrupt_exit()
    try:
        return _run_study_workers(
            args,
            study_name=study_name,
            storage_url=storage_url,
            mlflow_uri=mlflow_uri,
            data_dir=data_dir,
            storage=storage,
        )
    finally:
        signal.signal(signal.SIGINT, previous_handler)


def _run_study_workers(
    args: argparse.Namespace,
    *,
    study_name: str,
    storage_url: str,
    mlflow_uri: str | None,
    data_dir: str | None,
    storage: object | None,
) -> int:
    # Imported here: torch and the engine load only when a command really runs trials.
    from search.cli.progress import SearchProgress
    from search.optimize.launcher import plan_slots, run_slots
    from search.optimize.worker import WorkerSettings, run_worker
    from studies import budget_of, load_study_with_definition, open_storage

    apply_thread_limit()
    slots = plan_slots(gpus=args.gpus, workers_per_gpu=args.workers_per_gpu, workers=args.workers, device=args.device)
    storage = storage or open_storage(
        storage_url, heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period
    )
    study, _ = load_study_with_definition(storage, study_name)  # refuses a study ecgsearch did not create
    budget = budget_of(study)
    if len(slots) == 1:
        slot = slots[0]
        device = args.device if slot.gpu is None or args.device != "auto" else "cuda"
        settings = WorkerSettings(
            study_name=study_name,
            storage_url=storage_url,
            data_dir=data_dir,
            device=device,
            mlflow_uri=mlflow_uri,
            worker_index=args.worker_index if args.worker_index is not None else 0,
            timeout_s=args.timeout,
            heartbeat_interval_s=args.heartbeat_interval,
            grace_period_s=args.grace_period,
        )
        if args.no_progress:
            result = run_worker(settings, on_event=_print_finished, storage=storage)
        else:
            with SearchProgress(study, budget, console=console) as progress:
                result = run_worker(settings, on_event=progress.on_event, storage=storage)
        console.print(
            f"worker done: {result.trials_run} trials run here ({_tally(result.by_state)}); {result.stopped_because}"
        )
        return 0
    console.print(f"starting {len(slots)} worker processes: {', '.join(slot.label for slot in slots)}")
    flags = _child_flags(args, mlflow_uri=mlflow_uri, data_dir=data_dir)
    # Like the storage URL, the tracking URI (and any password in it) reaches the workers through the
    # environment, never on a command line `ps` shows.
    with (
        _environment("MLFLOW_TRACKING_URI", mlflow_uri),
        SearchProgress(study, budget, console=console, enabled=not args.no_progress) as progress,
    ):
        return run_slots(slots, study=study_name, storage_url=storage_url, base_flags=flags, on_tick=progress.poll)


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """`name=value` in this process's environment (inherited by the workers it starts), restored afterwards."""
    previous = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _child_flags(args: argparse.Namespace, *, mlflow_uri: str | None, data_dir: str | None) -> list[str]:
    flags = [
        "--heartbeat-interval",
        str(args.heartbeat_interval),
        "--grace-period",
        str(args.grace_period),
    ]
    if not mlflow_uri:
        flags += ["--mlflow-uri", "off"]
    if data_dir:
        flags += ["--data", data_dir]
    if args.timeout is not None:
        flags += ["--timeout", str(args.timeout)]
    return flags


def _tally(by_state: dict[str, int]) -> str:
    return ", ".join(f"{count} {state.lower()}" for state, count in sorted(by_state.items())) or "none"


def _print_finished(event) -> None:
    from search.cli.progress import describe_finished

    if event.kind == "finished":
        print(f"[pid {os.getpid()}] {describe_finished(event)}", flush=True)


def describe_study(study_name: str, definition: StudyDefinition, storage_url: str, budget: int | None) -> str:
    return (
        f"study [bold]{study_name}[/bold] · space {definition.space} · objective "
        f"{definition.objective} ({definition.direction}) · {definition.epochs} epochs · sampler "
        f"{definition.sampler} · pruner {definition.pruner} · budget {budget or 'unlimited'} trials · "
        f"storage {mask_secrets(storage_url)}"
    )
