"""What a worker tells whoever displays it: one event after every epoch and one when a trial ends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class TrialEvent:
    """Sent after every epoch (`kind="epoch"`) and at the end of every trial (`kind="finished"`)."""

    kind: str  # "epoch" | "finished"
    trial_number: int
    epoch: int = 0
    epochs: int = 0
    value: float | None = None
    state: str | None = None
    family: str | None = None
    reason: str | None = None


# Handlers given to worker processes are pickled into them: a module-level function or class instance.
EventHandler = Callable[[TrialEvent], None]
