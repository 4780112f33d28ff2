"""Error types of the study layer that do not belong to one module."""

from __future__ import annotations


class UnknownComponent(ValueError):
    """A sampler or pruner name that does not exist; the message lists the valid names."""

    exit_code = 2  # search.errors.EXIT_USAGE (studies cannot import search)

    def __init__(self, kind: str, name: str, valid: tuple[str, ...]) -> None:
        super().__init__(f"unknown {kind} {name!r}; expected one of: {', '.join(valid)}")
        self.kind = kind
        self.name = name
        self.valid = valid
