"""Exit codes, and the one base class of the errors a user can cause.

Every such error carries its exit code as the class attribute `exit_code`; the CLI turns an error
into a one-paragraph message and that code, and anything without one is a bug (exit 1, traceback).
Errors of the search package derive from `EcgSearchError`. The packages beneath it (`studies`,
`spaces`, `ecgmodels`) cannot import search, so their few error types set the same attribute
themselves (documented in docs/INTERNALS.md).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_STORAGE = 4
EXIT_STUDY = 5  # a study mismatch, or no such study
EXIT_NOTHING_TO_DO = 6
EXIT_WORKER_DIED = 7
EXIT_INTERRUPTED = 130


class EcgSearchError(Exception):
    """An error a user can cause and fix; `exit_code` is what the CLI exits with."""

    exit_code: int = EXIT_UNEXPECTED


class UsageError(EcgSearchError):
    """A flag or value the user gave cannot work; the message says which and what was expected."""

    exit_code = EXIT_USAGE


class NothingToDo(EcgSearchError):
    """The command ran correctly but found nothing to act on (e.g. no completed trial)."""

    exit_code = EXIT_NOTHING_TO_DO


class WorkerDied(EcgSearchError):
    """A worker process of this machine ended by a signal or an unexpected exit code."""

    exit_code = EXIT_WORKER_DIED


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error raised anywhere below the CLI (1 when it is not a user's error)."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    code = getattr(type(error), "exit_code", None)
    return code if isinstance(code, int) else EXIT_UNEXPECTED
