"""A Ctrl-C that Python swallows (raised inside a finalizer: "Exception ignored in …") still stops the worker:
it is kept quietly and raised again at the training loop's next batch. One that lands while the main thread
holds a study-storage connection is kept the same way, so it never stops the database driver half-way."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from search.interrupts import raise_swallowed_interrupt, swallowed_interrupts
from search.optimize.process import install_second_interrupt_exit, launcher_interrupts
from search.training.loop import fit
from training_toys import fresh_classifier, make_toy_data, quick


class _InterruptedWhileFinalized:
    """Its finalizer receives SIGINT: the handler's KeyboardInterrupt is raised inside `__del__`, where Python
    can only report it as unraisable (as when a garbage-collected weakref callback is running)."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):  # the Python-level handler runs at a bytecode boundary in here
            pass


def test_a_swallowed_interrupt_is_kept_quietly_and_raised_once(capfd) -> None:
    with swallowed_interrupts():
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            _InterruptedWhileFinalized()
        finally:
            signal.signal(signal.SIGINT, previous)
        with pytest.raises(KeyboardInterrupt):
            raise_swallowed_interrupt()
        raise_swallowed_interrupt()  # once only
    assert "Exception ignored" not in capfd.readouterr().err


def test_other_unraisable_errors_still_reach_the_previous_hook(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)

    class Broken:
        def __del__(self) -> None:
            raise ValueError("a real bug in a finalizer")

    with swallowed_interrupts():
        Broken()
    assert [type(u.exc_value) for u in seen] == [ValueError]
    assert sys.unraisablehook == seen.append  # put back on exit
    raise_swallowed_interrupt()  # nothing was swallowed


def test_a_worker_interrupted_inside_a_finalizer_stops_at_the_next_batch(capfd) -> None:
    """The worker's handlers (first interrupt: KeyboardInterrupt) with the interrupt landing in a finalizer:
    without the hook Python prints the traceback and training runs on to the end."""
    restore = install_second_interrupt_exit()
    try:
        _InterruptedWhileFinalized()
        with pytest.raises(KeyboardInterrupt):
            fit(fresh_classifier(), make_toy_data(), quick(epochs=3), autoencoder=False)
    finally:
        restore()
    assert "Exception ignored" not in capfd.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _interrupt_here(signum: int = signal.SIGINT) -> None:
    os.kill(os.getpid(), signum)
    for _ in range(10_000):  # the Python-level handler runs at a bytecode boundary in here
        pass


def _write_from_elsewhere(database: Path) -> None:
    """A write through a connection of its own that will not wait: fails if anyone still holds the write lock."""
    other = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_an_interrupt_while_the_worker_holds_a_storage_connection_is_raised_once_it_is_handed_back(tmp_path) -> None:
    """Raised inside the driver or the pool, KeyboardInterrupt can leave a connection in the middle of BEGIN
    IMMEDIATE, holding SQLite's write lock, so the interrupted trial could not be written as failed."""
    from studies import open_storage

    database = tmp_path / "study.db"
    storage = open_storage(f"sqlite:///{database}")
    restore = install_second_interrupt_exit()
    try:
        with storage.engine.connect() as connection, connection.begin():
            _interrupt_here()  # would raise here without the check
            connection.exec_driver_sql("SELECT 1")
        _write_from_elsewhere(database)  # the connection is back in its pool and its transaction over
        with pytest.raises(KeyboardInterrupt):
            raise_swallowed_interrupt()
        raise_swallowed_interrupt()  # once only
    finally:
        restore()
    with pytest.raises(KeyboardInterrupt):  # with no connection taken it is raised where it lands
        restore = install_second_interrupt_exit()
        try:
            _interrupt_here()
        finally:
            restore()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_launcher_keeps_an_interrupt_that_lands_in_its_own_storage_read(tmp_path, signum) -> None:
    """The launcher reads the study every tick while its workers run; an interrupt there must not leave it
    holding the lock the workers need to write their interrupted trials."""
    from studies import open_storage

    database = tmp_path / "study.db"
    storage = open_storage(f"sqlite:///{database}")
    with launcher_interrupts():
        with storage.engine.connect() as connection, connection.begin():
            _interrupt_here(signum)
        _write_from_elsewhere(database)
        with pytest.raises(KeyboardInterrupt):
            raise_swallowed_interrupt()
        with pytest.raises(KeyboardInterrupt):
            _interrupt_here(signum)


def test_a_kept_interrupt_stops_the_worker_before_it_takes_another_trial(
    tiny_real_dir, tmp_path, monkeypatch, start_args
) -> None:
    """Kept between trials (a storage read held the database when it came), the interrupt ends the worker
    at the top of its loop: exit 130, and no trial started."""
    import optuna

    from search.cli import main
    from search.interrupts import keep_interrupt

    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = start_args(tiny_real_dir, storage, "--space", "cnn", "--study", "kept", "--trials", "1", "--epochs", "1")
    assert main([*args, "--create-only", "--no-starting-points"]) == 0
    keep_interrupt()
    assert main(["worker", "--study", "kept", "--storage", storage, "--mlflow-uri", "off", "--no-progress"]) == 130
    assert optuna.load_study(study_name="kept", storage=storage).trials == []
