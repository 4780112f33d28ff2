"""The one error type a user's architecture choice can cause."""

from __future__ import annotations


class InvalidArchitecture(ValueError):
    """A parameter combination that cannot build a working model; the message names the reason."""

    exit_code = 2  # search.errors.EXIT_USAGE (ecgmodels imports torch only)
