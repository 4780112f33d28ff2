"""Exit codes the CLI returns, and the mapping from the packages' error types to them."""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_STORAGE = 4
EXIT_STUDY_MISMATCH = 5
EXIT_NOTHING_TO_DO = 6
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A flag or value the user gave cannot work; the message says which and what was expected."""

    exit_code = EXIT_USAGE


class NothingToDo(Exception):
    """The command ran correctly but found nothing to act on (e.g. no completed trial)."""

    exit_code = EXIT_NOTHING_TO_DO


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error raised anywhere below the CLI."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    code = getattr(error, "exit_code", None)
    if isinstance(code, int):
        return code
    # Imported here so `ecgsearch --help` stays fast and each package keeps its own error types.
    from ecgmodels import InvalidArchitecture
    from search.data import DataError
    from search.training.config import ConfigError
    from spaces import UnknownSpace
    from studies import StorageError, StudyMismatch, UnknownComponent

    if isinstance(error, DataError):
        return EXIT_DATA
    if isinstance(error, StorageError):
        return EXIT_STORAGE
    if isinstance(error, StudyMismatch):
        return EXIT_STUDY_MISMATCH
    if isinstance(error, ConfigError | InvalidArchitecture | UnknownSpace | UnknownComponent):
        return EXIT_USAGE
    return EXIT_UNEXPECTED
