"""A Ctrl-C that Python swallows (raised inside a finalizer: "Exception ignored in …") still stops the worker:
it is kept quietly and raised again at the training loop's next batch."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from search.interrupts import raise_swallowed_interrupt, swallowed_interrupts
from search.optimize.process import install_second_interrupt_exit
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
