"""`ecgsearch status`: trials by state, the best so far, and which workers run what right now."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Group
from rich.table import Table
from rich.text import Text

from search.cli.console import out, print_table
from search.cli.options import example, storage_option
from studies import StudyDefinition, StudySummary, mask_secrets


@click.command(
    "status",
    short_help="show a study's trials by state, best so far and live workers",
    epilog=example("ecgsearch status --study cnn_lstm --storage sqlite:///ecgsearch.db"),
)
@click.option("--study", "study_name", default=None, help="study name (default: list all studies)")
@storage_option
def command(study_name: str | None, storage: str) -> int:
    """Trials by state, the best value and its parameters, and the trials running now with their worker
    (host, pid, device), epoch reached and last heartbeat. Without --study, lists every study in the storage.
    """
    from studies import list_studies, load_study_with_definition, open_existing_storage, summarise

    opened = open_existing_storage(storage)
    if study_name:
        study, definition = load_study_with_definition(opened, study_name)
        out.print(render_summary(summarise(study, definition)))
        return 0
    listings = list_studies(opened)
    if not listings:
        out.print(f"no study yet in {mask_secrets(storage)}; create one with `ecgsearch start`")
        return 0
    table = Table(title=f"studies in {mask_secrets(storage)}")
    for column in ("study", "space", "objective", "trials", "best", "created"):
        table.add_column(column)
    for listing in listings:
        best = "—" if listing.best_value is None else f"{listing.best_value:.4f}"
        table.add_row(
            listing.name,
            listing.space or "(not ecgsearch)",
            listing.objective or "",
            str(listing.n_trials),
            best,
            listing.created_at or "",
        )
    print_table(table)
    return 0


def describe_study(study_name: str, definition: StudyDefinition, storage_url: str, budget: int | None) -> Text:
    """One line: the study, what it searches and how, its budget and where it is stored (password masked)."""
    return Text.assemble(
        "study ",
        (study_name, "bold"),
        f" · space {definition.space} · objective{'s' if definition.is_multi_objective else ''} "
        f"{', '.join(definition.metric_names())} ({', '.join(definition.directions())}) · "
        f"{definition.epochs} epochs · sampler {definition.sampler} · pruner {definition.pruner} · budget "
        f"{budget or 'unlimited'} trials · storage {mask_secrets(storage_url)}",
    )


def render_summary(summary: StudySummary) -> Group:
    """Header, trials by state, the best trial, and the running trials' workers."""
    definition = summary.definition
    budget = definition.trials_budget
    header = Text.assemble(
        (f"Study {summary.study_name}", "bold"),
        f"  space {definition.space} · objective {definition.objective} ({definition.direction})"
        f" · {definition.epochs} epochs · sampler {definition.sampler} · pruner {definition.pruner}",
        f"\nobjectives {', '.join(definition.metric_names())}" if definition.is_multi_objective else "",
        f"\nconstraints {_constraints(definition)}" if definition.constraint_limits() else "",
        (
            f"\n{budget - summary.trials_remaining} of a budget of {budget} trials finished (COMPLETE + PRUNED), "
            f"{summary.trials_remaining} left; {summary.n_trials} trials in all"
            if budget is not None and summary.trials_remaining is not None
            else f"\n{summary.n_trials} trials, no budget"
        ),
    )
    states = Table(title="Trials by state", show_header=True)
    for name in summary.counts:
        states.add_column(name, justify="right")
    states.add_row(*(str(count) for count in summary.counts.values()))
    parts: list[Any] = [header, states]
    if summary.best is None:
        parts.append(Text("No completed trial yet.", style="yellow"))
    else:
        best = summary.best
        parts.append(
            Text.assemble(
                ("Best: ", "bold"),
                f"trial {best.number}, val_{definition.objective} = {best.value:.4f}",
                f", family {best.family}" if best.family else "",
            )
        )
    if summary.exported is not None:
        number, reason = summary.exported
        parts.append(Text.assemble(("Retrain exports: ", "bold"), f"trial {number} ({reason})"))
    if summary.n_infeasible:
        parts.append(Text(f"{summary.n_infeasible} trials infeasible (over a constraint), stopped before training"))
    if summary.front:
        parts.append(_front_table(summary))
    if summary.running:
        parts.append(_running_table(summary))
    return Group(*parts)


def _constraints(definition: StudyDefinition) -> str:
    return ", ".join(
        f"{name} <= {format_metric(name, limit)}" for name, limit in definition.constraint_limits().items()
    )


def _front_table(summary: StudySummary) -> Table:
    names = summary.definition.metric_names()
    front = Table(title=f"Pareto front ({len(summary.front)} trials, cheapest first)", show_header=True)
    for column in ("trial", "family", *names):
        front.add_column(column, justify="right")
    for point in summary.front:
        front.add_row(
            str(point.number), point.family or "?", *(format_metric(name, point.values[name]) for name in names)
        )
    return front


def format_metric(name: str, value: float) -> str:
    """A value as its metric reads best: counts whole, latency in ms, quality to four places."""
    if name in ("params", "flops"):
        return f"{value:,.0f}"
    if name == "latency_ms":
        return f"{value:.3f} ms"
    return f"{value:.4f}"


def _running_table(summary: StudySummary) -> Table:
    workers = Table(title="Running trials", show_header=True)
    for column in ("trial", "family", "host", "pid", "device", "epoch", "last epoch", "heartbeat"):
        workers.add_column(column)
    for trial in summary.running:
        workers.add_row(
            str(trial.number),
            trial.family or "?",
            trial.worker_host or "?",
            str(trial.worker_pid) if trial.worker_pid is not None else "?",
            trial.device or "?",
            str(trial.epoch) if trial.epoch is not None else "-",
            _format_age(trial.heartbeat_age_s),
            _format_age(trial.storage_heartbeat_age_s),
        )
    return workers


def _format_age(age: float | None) -> str:
    if age is None:
        return "-"
    if age < 120:
        return f"{age:.0f} s ago"
    return f"{age / 60:.0f} min ago"
