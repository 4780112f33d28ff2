"""Running this machine's workers for `start` and `worker`: choose the display, run the slots, report them."""

from __future__ import annotations

import click

from search.cli.console import out, print_warning
from search.cli.options import given_or_none
from search.cli.progress import SearchProgress, TrialLinePrinter
from search.optimize.launcher import Slot, plan_slots, run_fleet, runs_in_process
from search.optimize.settings import WorkerSettings
from search.optimize.worker import LoadedStudy
from studies import budget_of


def plan_from_flags(ctx: click.Context) -> list[Slot]:
    """The slots the worker flags ask for; refused (exit 2) before anything is created."""
    params = ctx.params
    return plan_slots(
        gpus=params["gpus"],
        workers_per_gpu=given_or_none(ctx, "workers_per_gpu"),
        workers=given_or_none(ctx, "workers"),
        device=params["device"],
    )


def worker_settings(
    ctx: click.Context, *, study_name: str, storage_url: str, mlflow_uri: str | None, data_dir: str | None
) -> WorkerSettings:
    """`data_dir`: this machine's copy of the data, None for the path stored in the study."""
    params = ctx.params
    return WorkerSettings(
        study_name=study_name,
        storage_url=storage_url,
        mlflow_uri=mlflow_uri,
        data_dir=data_dir,
        timeout_s=params["timeout"],
        heartbeat_interval_s=params["heartbeat_interval"],
        grace_period_s=params["grace_period"],
        worker_label=params.get("worker_label") or None,
    )


def run_here(ctx: click.Context, settings: WorkerSettings, slots: list[Slot], loaded: LoadedStudy) -> None:
    """Run the slots with a live bar (or one line per trial) until the budget is spent; report each worker."""
    progress = not ctx.params["no_progress"]
    in_process = runs_in_process(slots)
    if not in_process:
        out.print(f"starting {len(slots)} worker processes: {', '.join(slot.label for slot in slots)}")
    with SearchProgress(loaded.study, budget_of(loaded.study), enabled=progress) as display:
        # In this process the bar gets every epoch; spawned workers are followed through the database.
        live = display.on_event if in_process else None
        on_event = live if progress else TrialLinePrinter()
        fleet = run_fleet(
            settings, slots, loaded=loaded, threads=ctx.params["threads"], on_event=on_event, on_tick=display.poll
        )
    for label, result in fleet.results.items():
        tally = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.by_state.items())) or "none"
        who = "worker" if in_process else f"worker {label} (pid {result.pid})"
        where = " here" if in_process else ""
        out.print(f"{who} done: {result.trials_run} trials run{where} ({tally}); {result.stopped_because}")
    for death in fleet.deaths:
        print_warning(f"{death}; the other workers finished the study's budget")
