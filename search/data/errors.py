"""The one error type of the data layer: every problem names the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path

from search.errors import EXIT_DATA, EcgSearchError


class DataError(EcgSearchError):
    """Input data that cannot be used; `str()` reads `<path> [<field>]: <what is wrong and expected>`."""

    exit_code = EXIT_DATA

    def __init__(self, path: str | Path, field: str, message: str) -> None:
        self.path = str(path)
        self.field = field
        self.message = message
        super().__init__(f"{self.path} [{field}]: {message}")
