"""Inside one worker process: its device and threads, quiet library logs, Ctrl-C and SIGTERM, and the spawned
child's entry.

A spawned child reports back over a pipe exactly once: ("done", WorkerResult), ("interrupted",) or
("error", module, class name, message) for an error a user can fix. Error classes differ in their
constructors, so only the class and the message cross the process boundary and the parent raises the same
class with the same message (and so the same exit code). A child that reports nothing died.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from search.interrupts import keep_interrupt, swallowed_interrupts
from search.optimize.events import EventHandler
from search.optimize.settings import WorkerSettings


def quiet_library_logs() -> None:
    """Optuna's per-trial log lines and experimental-API warnings would tear through the progress display;
    the workers report every trial themselves, with its reason when it failed."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# SIGTERM is how `docker compose stop` and Kubernetes stop a worker: treated like a first Ctrl-C, so the
# running trial fails cleanly and is re-queued at once instead of waiting out its heartbeat.
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def install_second_interrupt_exit() -> Callable[[], None]:
    """First Ctrl-C or SIGTERM: KeyboardInterrupt, the running trial fails cleanly and is re-queued.
    The second: exit at once. Returns a function that puts the previous handlers back."""

    def on_interrupt(signum: int, frame: object) -> None:
        for interrupt in INTERRUPTS:
            signal.signal(interrupt, lambda *_: os._exit(130))
        raise_outside_storage_calls()

    return _install(on_interrupt)


def raise_outside_storage_calls() -> None:
    """KeyboardInterrupt now, or, while the main thread holds a study-storage connection, at the next batch
    or worker-loop turn (`search.interrupts`)."""
    from studies import main_thread_holds_storage_connection

    if main_thread_holds_storage_connection():
        keep_interrupt()
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def launcher_interrupts() -> Iterator[None]:
    """While waiting on spawned workers: Ctrl-C and SIGTERM alike raise KeyboardInterrupt, outside the launcher's
    own storage reads, so the launcher forwards one SIGINT to each worker (a second signal still kills them,
    see `_Fleet._stop`); an interrupt kept or swallowed meanwhile is raised at the launcher's next tick."""

    def on_interrupt(signum: int, frame: object) -> None:
        raise_outside_storage_calls()

    restore = _install(on_interrupt)
    try:
        yield
    finally:
        restore()


def _install(handler: Callable[[int, object], None]) -> Callable[[], None]:
    """`handler` for both interrupts, and an interrupt swallowed by a finalizer kept for the training loop (or
    the launcher's tick)."""
    previous = {interrupt: signal.signal(interrupt, handler) for interrupt in INTERRUPTS}
    swallowed = contextlib.ExitStack()
    swallowed.enter_context(swallowed_interrupts())

    def restore() -> None:
        swallowed.close()
        for interrupt, old in previous.items():
            signal.signal(interrupt, old)

    return restore


def set_thread_count(threads: int) -> None:
    """Intra-op threads of this process: its share of the cores, so parallel workers do not oversubscribe."""
    import torch

    torch.set_num_threads(threads)


def slot_main(
    settings: WorkerSettings,
    device: str,
    environment: dict[str, str],
    threads: int,
    on_event: EventHandler | None,
    report: Connection,
) -> None:
    """Entry of a spawned worker process: isolate it, set its device and threads, run the worker, report."""
    # Before torch touches CUDA: a GPU slot must see exactly its GPU (as cuda:0), a CPU slot none.
    os.environ.update(environment)
    # Its own process group: a terminal's Ctrl-C reaches the launcher only, which forwards exactly one SIGINT.
    os.setpgid(0, 0)
    install_second_interrupt_exit()
    quiet_library_logs()
    set_thread_count(threads)
    from search.optimize.worker import run_worker

    try:
        result = run_worker(settings, device=device, on_event=on_event)
    except KeyboardInterrupt:
        report.send(("interrupted",))
        return
    except Exception as error:
        if not isinstance(getattr(type(error), "exit_code", None), int):
            raise  # a bug: multiprocessing prints the traceback and the process exits 1
        report.send(("error", type(error).__module__, type(error).__qualname__, str(error)))
        return
    report.send(("done", result))


def rebuild_error(module: str, qualname: str, message: str) -> Exception:
    """The error a child reported: same class, same message (its constructor is bypassed on purpose)."""
    error_class: Any = importlib.import_module(module)
    for part in qualname.split("."):
        error_class = getattr(error_class, part)
    error = error_class.__new__(error_class)
    error.args = (message,)
    return error
