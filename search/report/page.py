"""One self-contained HTML page about a study: figures, the best trials, links to their MLflow runs.

The page (templates/report.html.j2) embeds plotly.js once and loads nothing from the network, so it
can be mailed or opened on a machine without internet. The figures are drawn in `search.report.figures`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import optuna
from optuna.trial import FrozenTrial, TrialState

from search.errors import NothingToDo
from search.report import figures
from search.tracking.uri import mlflow_run_link
from studies import COST_OBJECTIVES, StudyDefinition, best_trial, count_trials, pareto_front, quality_value

TEMPLATE = "report.html.j2"
KEY_PARAMS_SHOWN = 6


@dataclass
class ReportSummary:
    """What `write_report` wrote, for the command's closing line."""

    path: Path
    n_trials: int
    n_complete: int
    best_value: float | None
    best_trial: int | None
    figures: list[str]


@dataclass
class Section:
    """One section of the page: a figure (plotly's HTML), a note saying why there is none, or table rows."""

    anchor: str
    title: str
    figure: str | None = None
    note: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("search.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _completed(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE and t.values]


def build_report_html(
    study: optuna.Study,
    definition: StudyDefinition,
    *,
    storage_label: str,
    top_n: int = 20,
) -> tuple[str, list[str]]:
    """The page and the ids of the figures it holds. `storage_label` must already be masked."""
    trials = study.get_trials(deepcopy=False)
    completed = _completed(trials)
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    objective = definition.objective
    importances, importance_note = figures.param_importances(study, completed)
    renderer = figures.FigureRenderer()

    def section(anchor: str, title: str, figure: figures.FigureOrNote) -> Section:
        if isinstance(figure, str):
            return Section(anchor, title, note=figure)
        return Section(anchor, title, figure=renderer.render(f"fig-{anchor}", figure))

    importance = figures.importance_figure(study, importances, objective) if importances else importance_note
    sections = [
        section("history", "Optimisation history", figures.history_figure(study, completed, objective)),
        section("curves", "Learning curves (intermediate values)", figures.curves_figure(trials, objective)),
        section("importance", "Parameter importances", importance),
        section("parallel", "Parallel coordinates", figures.parallel_figure(study, completed, importances, objective)),
        section("families", "Best value per architecture family", figures.family_figure(trials, maximize, objective)),
        _top_section(completed, maximize, definition, importances, top_n),
    ]
    if definition.is_multi_objective:
        front = pareto_front(study, completed)
        tradeoff = figures.tradeoff_figure(completed, front, definition.metric_names(), objective)
        sections.insert(0, section("front", f"Pareto front ({len(front)} trials)", tradeoff))
    page = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=f"ecgsearch report: {study.study_name}",
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            facts=_facts(study, definition, trials, completed, storage_label),
            sections=sections,
            objective=objective,
        )
    )
    return page, renderer.ids


def write_report(
    study: optuna.Study,
    definition: StudyDefinition,
    out: Path,
    *,
    storage_label: str,
    top_n: int = 20,
) -> ReportSummary:
    """Write the page to `out`; `search.errors.NothingToDo` when the study has no trial at all."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise NothingToDo(
            f"Study {study.study_name!r} has no trials yet, so there is nothing to report. Start "
            f"workers with `ecgsearch worker --study {study.study_name}` and run the report again."
        )
    page, figure_ids = build_report_html(study, definition, storage_label=storage_label, top_n=top_n)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    best = best_trial(study, _completed(trials))
    return ReportSummary(
        path=out,
        n_trials=len(trials),
        n_complete=len(_completed(trials)),
        best_value=quality_value(best) if best else None,
        best_trial=best.number if best else None,
        figures=figure_ids,
    )


def _facts(
    study: optuna.Study,
    definition: StudyDefinition,
    trials: list[FrozenTrial],
    completed: list[FrozenTrial],
    storage_label: str,
) -> dict[str, Any]:
    """The header table's values, as text (the template escapes them)."""
    best = best_trial(study, completed)
    counts = {state: n for state, n in count_trials(study).items() if n}
    uri = definition.mlflow_tracking_uri
    return {
        "space": definition.space,
        "objective": ", ".join(definition.metric_names()),
        "direction": ", ".join(definition.directions()),
        "trial_counts": ", ".join(f"{n} {s.lower()}" for s, n in counts.items()),
        "n_trials": len(trials),
        "best": (
            f"{quality_value(best):.4f} (trial {best.number}, {figures.family_label(best)})"
            if best
            else "none yet: no trial has completed"
        ),
        "storage": storage_label,
        "data_path": definition.data_path,
        "n_channels": definition.n_channels,
        "seq_len": definition.seq_len,
        "sampler": definition.sampler,
        "pruner": definition.pruner,
        "epochs": definition.epochs,
        "mlflow_uri": uri,
        "mlflow_is_server": bool(uri) and urlsplit(uri).scheme in ("http", "https"),
        "mlflow_experiment_id": definition.mlflow_experiment_id,
        "ecgsearch_version": definition.ecgsearch_version,
        "optuna_version": definition.optuna_version,
        "torch_version": definition.torch_version,
    }


def _top_section(
    completed: list[FrozenTrial],
    maximize: bool,
    definition: StudyDefinition,
    importances: dict[str, float],
    top_n: int,
) -> Section:
    if not completed:
        note = "No trial has completed yet: the table of top trials appears once one does."
        return Section("top", "Top trials", note=note)
    ranked = sorted(completed, key=lambda t: t.values[0], reverse=maximize)[:top_n]
    rows = [_top_row(rank, trial, definition, importances) for rank, trial in enumerate(ranked, start=1)]
    return Section("top", f"Top {len(ranked)} trials", rows=rows)


def _top_row(rank: int, trial: FrozenTrial, definition: StudyDefinition, importances: dict[str, float]) -> dict:
    # Most important parameters first, so the columns a reader compares line up across rows.
    order = {name: i for i, name in enumerate(importances)}
    names = sorted((n for n in trial.params if n != "family"), key=lambda n: (order.get(n, len(order)), n))
    shown = [f"{n}={_format_value(trial.params[n])}" for n in names]
    n_params = trial.user_attrs.get("n_params")
    run_id = trial.user_attrs.get("mlflow_run_id")
    return {
        "rank": rank,
        "number": trial.number,
        "family": figures.family_label(trial),
        "value": f"{quality_value(trial):.4f}",
        "costs": _costs(trial),
        "state": trial.state.name.lower(),
        "n_params": f"{n_params:,}" if isinstance(n_params, int) else "—",
        "params": shown[:KEY_PARAMS_SHOWN],
        "more": shown[KEY_PARAMS_SHOWN:],
        "mlflow_run_id": str(run_id) if run_id else None,
        "mlflow_link": (
            mlflow_run_link(definition.mlflow_tracking_uri, definition.mlflow_experiment_id, str(run_id))
            if run_id
            else None
        ),
    }


def _costs(trial: FrozenTrial) -> str:
    """`flops 6.98e+06 · latency_ms 0.149`: what running the model costs, as measured before it trained."""
    measured = trial.user_attrs.get("cost") or {}
    return " · ".join(f"{name} {measured[name]:.3g}" for name in COST_OBJECTIVES[1:] if name in measured) or "—"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
