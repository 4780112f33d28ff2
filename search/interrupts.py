"""A Ctrl-C (or SIGTERM) that Python swallowed, kept until the next point that can act on it.

The first interrupt raises KeyboardInterrupt from the signal handler, wherever the main thread is. When that
is inside a finalizer (a `__del__`, a weakref callback run by the garbage collector: SQLAlchemy and torch
both have them) Python cannot propagate it: it prints "Exception ignored in …" with a traceback and goes on,
and the worker trains as if nothing had happened. `swallowed_interrupts` catches exactly that case through
`sys.unraisablehook`, quietly, and `raise_swallowed_interrupt` raises it again where code can handle it
(the training loop calls it once per batch; the launcher once per tick).

The worker's and the launcher's handlers keep an interrupt the same way, without raising it, while the
main thread holds a study-storage connection: raised inside the database driver or the connection pool it can
leave a connection unreturned in the middle of a transaction, holding SQLite's write lock, and the failed trial
could then not be written (`keep_interrupt`; the worker loop also checks between trials).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

_swallowed = threading.Event()


@contextlib.contextmanager
def swallowed_interrupts() -> Iterator[None]:
    """While active, a KeyboardInterrupt raised where Python cannot propagate it is recorded, not printed;
    every other unraisable exception goes to the hook that was there before."""
    previous = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _swallowed.set()
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def keep_interrupt() -> None:
    """Record an interrupt to be raised at the next `raise_swallowed_interrupt`, instead of raising it here."""
    _swallowed.set()


def raise_swallowed_interrupt() -> None:
    """Raise KeyboardInterrupt once if an interrupt was swallowed since the last call."""
    if _swallowed.is_set():
        _swallowed.clear()
        raise KeyboardInterrupt
