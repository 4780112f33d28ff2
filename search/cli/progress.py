"""What the terminal shows while a search runs: a live bar, or one line per finished trial."""

from __future__ import annotations

import math
import os
import time
from types import TracebackType

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from search.cli.console import out
from search.optimize.events import TrialEvent
from studies import best_trial


class SearchProgress:
    """A rich progress bar fed by worker events (one process) or by polling the database (many)."""

    def __init__(
        self, study: optuna.Study, budget: int | None, *, enabled: bool = True, console: Console = out
    ) -> None:
        self.study = study
        self.budget = budget
        self.enabled = enabled
        self._last_poll = 0.0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[tally]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[current]}", markup=False),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task("trials", total=budget, tally="", current="")

    def __enter__(self) -> SearchProgress:
        if self.enabled:
            self._progress.start()
            self.refresh()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.enabled:
            self.refresh()
            self._progress.stop()

    def on_event(self, event: TrialEvent) -> None:
        if event.kind == "epoch":
            value = "" if event.value is None or math.isnan(event.value) else f" val={event.value:.4f}"
            current = f"#{event.trial_number} {event.family} epoch {event.epoch}/{event.epochs}{value}"
            self._progress.update(self._task, current=current)
        else:
            self._progress.console.print(describe_finished(event))
            self._progress.update(self._task, current="")
            self.refresh()

    def poll(self, min_interval_s: float = 1.0) -> None:
        """Refresh from the database, at most once per `min_interval_s` (for multi-process runs)."""
        now = time.monotonic()
        if self.enabled and now - self._last_poll >= min_interval_s:
            self._last_poll = now
            self.refresh(show_running=True)

    def refresh(self, show_running: bool = False) -> None:
        trials = self.study.get_trials(deepcopy=False)
        by_state: dict[TrialState, int] = {}
        for trial in trials:
            by_state[trial.state] = by_state.get(trial.state, 0) + 1
        done = by_state.get(TrialState.COMPLETE, 0) + by_state.get(TrialState.PRUNED, 0)
        best = best_trial(self.study, trials)
        shown = "—" if best is None else f"{best.value:.4f}"
        tally = (
            f"pruned {by_state.get(TrialState.PRUNED, 0)} · failed {by_state.get(TrialState.FAIL, 0)} · best {shown}"
        )
        fields: dict[str, str] = {"tally": tally}
        if show_running:
            running = [t for t in trials if t.state == TrialState.RUNNING]
            fields["current"] = " ".join(f"#{t.number} e{t.user_attrs.get('epoch', 0)}" for t in running[:6])
        self._progress.update(self._task, completed=done, **fields)


def describe_finished(event: TrialEvent) -> str:
    """One line per finished trial: what it was, how it ended and why."""
    line = f"trial {event.trial_number} {event.family or '?'}: {event.state}"
    if event.value is not None and not math.isnan(event.value):
        line += f" value={event.value:.4f}"
    if event.state == "COMPLETE":
        line += f" after {event.epoch} epochs"
    if event.reason:
        line += f" ({event.reason})"
    return line


class TrialLinePrinter:
    """`--no-progress`: one line per finished trial on stdout, from whichever process ran it.

    Picklable (a module-level class without state), so each spawned worker process prints its own lines.
    """

    def __call__(self, event: TrialEvent) -> None:
        if event.kind == "finished":
            out.print(f"[pid {os.getpid()}] {describe_finished(event)}")
