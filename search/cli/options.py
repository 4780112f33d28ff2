"""Options shared by several commands, each defined once, and the checks that span two options."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from studies import DEFAULT_STORAGE_URL

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def example(*commands: str) -> str:
    """An `Example:` epilog, kept as written (click rewraps paragraphs that do not start with \\b)."""
    return "\b\nExample:\n" + "\n".join(f"  {command}" for command in commands)


storage_option = click.option(
    "--storage",
    envvar="ECGSEARCH_STORAGE",
    show_envvar=True,
    default=DEFAULT_STORAGE_URL,
    show_default=True,
    metavar="URL",
    help="study database URL (sqlite:///FILE, postgresql+psycopg://USER:PASSWORD@HOST/DB); pass a URL "
    "holding a password through the environment variable, not on the command line",
)

mlflow_option = click.option(
    "--mlflow-uri",
    envvar="MLFLOW_TRACKING_URI",
    show_envvar=True,
    default=None,
    metavar="URI|off",
    help="MLflow tracking URI (default: sqlite:///mlflow.db beside the study database); 'off' disables mirroring",
)


# Flags shared by `start` and `worker`: where this machine's workers run and how they stay alive.
_WORKER_OPTIONS: tuple[Decorator, ...] = (
    click.option(
        "--gpus",
        default=None,
        metavar="all|0,1,…",
        help="GPUs to use, one worker process per GPU slot, each seeing only its GPU "
        "(default: all GPUs when CUDA is visible, else CPU workers)",
    ),
    click.option(
        "--workers-per-gpu",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        metavar="K",
        help="worker processes per GPU (small models leave a big GPU idle with one)",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        metavar="N",
        help="worker processes: CPU processes without a GPU; with CUDA visible and no --gpus, "
        "N processes spread round-robin over every GPU",
    ),
    click.option(
        "--device",
        type=click.Choice(("auto", "cpu", "cuda")),
        default="auto",
        show_default=True,
        help="auto: GPUs when CUDA is visible; cpu: CPU workers even on a GPU machine",
    ),
    click.option(
        "--threads",
        envvar="ECGSEARCH_THREADS",
        show_envvar=True,
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="CPU threads per worker process (default: this machine's cores divided by its worker processes)",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="S",
        help="stop starting new trials after S seconds (running trials finish)",
    ),
    click.option(
        "--heartbeat-interval",
        type=click.IntRange(min=1),
        default=30,
        show_default=True,
        metavar="S",
        help="seconds between a running trial's heartbeats in the database",
    ),
    click.option(
        "--grace-period",
        type=click.IntRange(min=1),
        default=90,
        show_default=True,
        metavar="S",
        help="a RUNNING trial without a heartbeat for this long is failed and re-queued "
        "(must exceed --heartbeat-interval)",
    ),
    click.option(
        "--no-progress", is_flag=True, help="print one line per finished trial instead of a live progress bar"
    ),
)


def worker_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the worker flags to a command, in the order `--help` lists them."""
    for option in reversed(_WORKER_OPTIONS):
        function = option(function)
    return function


def given(ctx: click.Context, name: str) -> bool:
    """Whether the user set parameter `name` (on the command line or through its environment variable)."""
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def given_or_none(ctx: click.Context, name: str) -> Any:
    """The parameter's value when the user set it, None when it is only its default."""
    return ctx.params[name] if given(ctx, name) else None


def check_heartbeat(ctx: click.Context) -> None:
    """A trial is failed after --grace-period without a heartbeat: it must outlast one heartbeat interval."""
    interval, grace = ctx.params["heartbeat_interval"], ctx.params["grace_period"]
    if grace <= interval:
        raise click.BadParameter(
            f"{grace} must be greater than --heartbeat-interval ({interval}), or live trials would be failed "
            "between two heartbeats",
            ctx=ctx,
            param_hint="'--grace-period'",
        )
