"""One self-contained HTML page about a study: figures, the best trials, links to their MLflow runs.

The page embeds plotly.js once and loads nothing from the network, so it can be mailed or
opened on a machine without internet.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from search.tracking.uri import mlflow_run_link
from studies import StudyDefinition, best_trial, count_trials, trial_family

# PED-ANOVA compares the top quantile of trials with all of them: with fewer completed trials
# than this, the "importances" are noise and would mislead more than inform.
MIN_TRIALS_FOR_IMPORTANCE = 5
MIN_TRIALS_FOR_PARALLEL = 2
PARALLEL_MAX_PARAMS = 8
KEY_PARAMS_SHOWN = 6

_STATE_STYLE = {
    # Pruned curves stay visible but read as second-class: dashed and lighter.
    TrialState.COMPLETE: {"color": "#1f77b4", "dash": "solid", "opacity": 0.9},
    TrialState.PRUNED: {"color": "#ff7f0e", "dash": "dash", "opacity": 0.55},
    TrialState.FAIL: {"color": "#d62728", "dash": "dot", "opacity": 0.55},
    TrialState.RUNNING: {"color": "#7f7f7f", "dash": "dot", "opacity": 0.7},
    TrialState.WAITING: {"color": "#7f7f7f", "dash": "dot", "opacity": 0.7},
}


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
class _Section:
    anchor: str
    title: str
    body: str


def family_label(trial: FrozenTrial) -> str:
    return trial_family(trial) or "unknown"


def build_report_html(
    study: optuna.Study,
    definition: StudyDefinition,
    *,
    storage_label: str,
    top_n: int = 20,
) -> tuple[str, list[str]]:
    """The page and the ids of the figures it holds. `storage_label` must already be masked."""
    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    objective = definition.objective

    importances, importance_note = _importances(study, completed)
    figures = _Figures()
    sections = [
        _Section("history", "Optimisation history", figures.add(_history_figure(study, completed, objective))),
        _Section("curves", "Learning curves (intermediate values)", figures.add(_curves_figure(trials, objective))),
        _Section(
            "importance",
            "Parameter importances",
            figures.add(_importance_figure(importances)) if importances else _note(importance_note),
        ),
        _Section(
            "parallel",
            "Parallel coordinates",
            figures.add(_parallel_figure(study, completed, importances, objective)),
        ),
        _Section(
            "families",
            "Best value per architecture family",
            figures.add(_family_figure(trials, maximize, objective)),
        ),
        _Section(
            "top",
            f"Top {min(top_n, len(completed))} trials" if completed else "Top trials",
            _top_table(completed, maximize, definition, importances, top_n),
        ),
    ]
    page = _page(study, definition, trials, completed, storage_label, sections)
    return page, figures.ids


def write_report(
    study: optuna.Study,
    definition: StudyDefinition,
    out: Path,
    *,
    storage_label: str,
    top_n: int = 20,
) -> ReportSummary:
    """Write the page to `out`; `search.errors.NothingToDo` when the study has no trial at all."""
    from search.errors import NothingToDo

    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise NothingToDo(
            f"Study {study.study_name!r} has no trials yet, so there is nothing to report. Start "
            f"workers with `ecgsearch worker --study {study.study_name}` and run the report again."
        )
    page, figure_ids = build_report_html(study, definition, storage_label=storage_label, top_n=top_n)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    completed = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = best_trial(study, completed)
    return ReportSummary(
        path=out,
        n_trials=len(trials),
        n_complete=len(completed),
        best_value=best.value if best else None,
        best_trial=best.number if best else None,
        figures=figure_ids,
    )


class _Figures:
    """Renders figures to HTML fragments, embedding plotly.js with the first one only."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def add(self, figure: tuple[str, go.Figure] | str) -> str:
        if isinstance(figure, str):  # a note explaining why there is no figure
            return _note(figure)
        div_id, fig = figure
        fig.update_layout(template="plotly_white", margin={"l": 60, "r": 30, "t": 60, "b": 50})
        fragment = fig.to_html(
            full_html=False,
            include_plotlyjs=not self.ids,
            div_id=div_id,
            config={"displaylogo": False, "responsive": True},
        )
        self.ids.append(div_id)
        return fragment


def _importances(study: optuna.Study, completed: list[FrozenTrial]) -> tuple[dict[str, float], str]:
    if len(completed) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, (
            f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials; "
            f"this study has {len(completed)}. They will appear once more trials finish."
        )
    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return {}, f"Parameter importances could not be computed: {error}"
    if not importances:
        return {}, "Parameter importances could not be computed: the completed trials share no parameter."
    return dict(importances), ""


def _history_figure(study: optuna.Study, completed: list[FrozenTrial], objective: str) -> tuple[str, go.Figure] | str:
    if not completed:
        return "No trial has completed yet, so there is no objective value to plot."
    fig = optuna.visualization.plot_optimization_history(study, target_name=objective)
    fig.update_layout(title={"text": "Optimisation history"}, xaxis_title="trial", yaxis_title=objective)
    return "fig-history", fig


def _curves_figure(trials: list[FrozenTrial], objective: str) -> tuple[str, go.Figure] | str:
    with_steps = [t for t in trials if t.intermediate_values]
    if not with_steps:
        return "No trial has reported an epoch yet, so there are no learning curves."
    fig = go.Figure()
    legend_shown: set[TrialState] = set()
    for trial in with_steps:
        style = _STATE_STYLE.get(trial.state, _STATE_STYLE[TrialState.RUNNING])
        steps = sorted(trial.intermediate_values)
        values = [trial.intermediate_values[s] for s in steps]
        family = family_label(trial)
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[v if math.isfinite(v) else None for v in values],
                mode="lines+markers",
                name=trial.state.name.lower(),
                legendgroup=trial.state.name,
                showlegend=trial.state not in legend_shown,
                line={"color": style["color"], "dash": style["dash"], "width": 1.5},
                marker={"size": 4, "symbol": "x" if trial.state == TrialState.PRUNED else "circle"},
                opacity=style["opacity"],
                hovertemplate=(
                    f"trial {trial.number} ({html.escape(family)}, {trial.state.name.lower()})"
                    "<br>epoch %{x}<br>" + html.escape(objective) + " %{y:.4f}<extra></extra>"
                ),
            )
        )
        legend_shown.add(trial.state)
    fig.update_layout(
        title={"text": "Learning curves (validation objective per epoch)"},
        xaxis_title="epoch",
        yaxis_title=f"validation {objective}",
        legend_title_text="state",
    )
    return "fig-curves", fig


def _importance_figure(importances: dict[str, float]) -> tuple[str, go.Figure]:
    names = list(importances)[::-1]  # most important on top
    fig = go.Figure(
        go.Bar(
            x=[importances[n] for n in names],
            y=names,
            orientation="h",
            marker_color="#1f77b4",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": "Parameter importances (PED-ANOVA, completed trials)"},
        xaxis_title="importance (normalised)",
        height=max(300, 28 * len(names) + 120),
    )
    return "fig-importance", fig


def _parallel_figure(
    study: optuna.Study, completed: list[FrozenTrial], importances: dict[str, float], objective: str
) -> tuple[str, go.Figure] | str:
    if len(completed) < MIN_TRIALS_FOR_PARALLEL:
        return (
            f"Parallel coordinates need at least {MIN_TRIALS_FOR_PARALLEL} completed trials; "
            f"this study has {len(completed)}."
        )
    # Every parameter of every family would make an unreadable plot: keep the ones that matter.
    if importances:
        params = list(importances)[:PARALLEL_MAX_PARAMS]
    else:
        counts = Counter(name for t in completed for name in t.params)
        params = [name for name, _ in counts.most_common(PARALLEL_MAX_PARAMS)]
    fig = optuna.visualization.plot_parallel_coordinate(study, params=sorted(params), target_name=objective)
    fig.update_layout(title={"text": "Parallel coordinates (completed trials, most important parameters)"})
    return "fig-parallel", fig


def _family_figure(trials: list[FrozenTrial], maximize: bool, objective: str) -> tuple[str, go.Figure] | str:
    by_family: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        by_family.setdefault(family_label(trial), []).append(trial)
    best: dict[str, float] = {}
    for family, members in by_family.items():
        values = [t.value for t in members if t.state == TrialState.COMPLETE and t.value is not None]
        if values:
            best[family] = max(values) if maximize else min(values)
    if not best:
        return "No trial has completed yet, so no family has a best value."
    families = sorted(best, key=best.__getitem__, reverse=maximize)
    labels = []
    for family in families:
        states = Counter(t.state.name.lower() for t in by_family[family])
        labels.append(", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    fig = go.Figure(
        go.Bar(
            x=families,
            y=[best[f] for f in families],
            text=[f"{best[f]:.4f}" for f in families],
            textposition="outside",
            customdata=labels,
            marker_color="#2ca02c",
            hovertemplate="%{x}: best %{y:.4f}<br>trials: %{customdata}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": f"Best {objective} per architecture family"},
        xaxis_title="family",
        yaxis_title=f"best {objective}",
    )
    return "fig-families", fig


def _key_params(trial: FrozenTrial, importances: dict[str, float]) -> tuple[list[str], list[str]]:
    rank = {name: i for i, name in enumerate(importances)}
    names = sorted((n for n in trial.params if n != "family"), key=lambda n: (rank.get(n, len(rank)), n))
    shown = [f"{n}={_format_value(trial.params[n])}" for n in names]
    return shown[:KEY_PARAMS_SHOWN], shown[KEY_PARAMS_SHOWN:]


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _mlflow_cell(trial: FrozenTrial, definition: StudyDefinition) -> str:
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id:
        return "—"
    link = mlflow_run_link(definition.mlflow_tracking_uri, definition.mlflow_experiment_id, str(run_id))
    if link:
        return f'<a href="{html.escape(link)}">{html.escape(str(run_id)[:12])}</a>'
    return f"<code>{html.escape(str(run_id))}</code>"


def _top_table(
    completed: list[FrozenTrial],
    maximize: bool,
    definition: StudyDefinition,
    importances: dict[str, float],
    top_n: int,
) -> str:
    if not completed:
        return _note("No trial has completed yet: the table of top trials appears once one does.")
    ranked = sorted(completed, key=lambda t: t.value, reverse=maximize)[:top_n]
    rows = []
    for rank, trial in enumerate(ranked, start=1):
        shown, more = _key_params(trial, importances)
        params = html.escape(", ".join(shown))
        if more:
            params += f" <details><summary>{len(more)} more</summary>{html.escape(', '.join(more))}</details>"
        n_params = trial.user_attrs.get("n_params")
        rows.append(
            f'<tr id="trial-{trial.number}"><td>{rank}</td><td>{trial.number}</td>'
            f"<td>{html.escape(family_label(trial))}</td><td>{trial.value:.4f}</td>"
            f"<td>{trial.state.name.lower()}</td>"
            f"<td>{f'{n_params:,}' if isinstance(n_params, int) else '—'}</td>"
            f'<td class="params">{params}</td><td>{_mlflow_cell(trial, definition)}</td></tr>'
        )
    return (
        '<table class="trials"><thead><tr><th>rank</th><th>trial</th><th>family</th>'
        f"<th>{html.escape(definition.objective)}</th><th>state</th><th>parameters</th>"
        "<th>key hyperparameters</th><th>MLflow run</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _mlflow_note(definition: StudyDefinition) -> str:
    uri = definition.mlflow_tracking_uri
    if not uri:
        return "MLflow mirroring was off for this study."
    if urlsplit(uri).scheme in ("http", "https"):
        return f'MLflow server: <a href="{html.escape(uri)}">{html.escape(uri)}</a> (run links in the table).'
    experiment = (
        f", experiment id <code>{html.escape(definition.mlflow_experiment_id)}</code>"
        if definition.mlflow_experiment_id
        else ""
    )
    return (
        f"MLflow store <code>{html.escape(uri)}</code>{experiment}. Browse the runs with "
        f"<code>mlflow ui --backend-store-uri {html.escape(uri)}</code> (run from the folder the "
        "study was started in when the path is relative)."
    )


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _page(
    study: optuna.Study,
    definition: StudyDefinition,
    trials: list[FrozenTrial],
    completed: list[FrozenTrial],
    storage_label: str,
    sections: list[_Section],
) -> str:
    best = best_trial(study, completed)
    counts = {state: n for state, n in count_trials(study).items() if n}
    best_text = (
        f"{best.value:.4f} (trial {best.number}, {html.escape(family_label(best))})"
        if best
        else "none yet: no trial has completed"
    )
    facts = [
        ("Space", html.escape(definition.space)),
        ("Objective", f"{html.escape(definition.objective)} ({study.direction.name.lower()})"),
        ("Trials", ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) + f" ({len(trials)} in all)"),
        ("Best value", best_text),
        ("Storage", f"<code>{html.escape(storage_label)}</code>"),
        (
            "Data",
            f"<code>{html.escape(definition.data_path)}</code> ({definition.n_channels} leads × "
            f"{definition.seq_len} samples)",
        ),
        (
            "Search",
            f"sampler {html.escape(definition.sampler)}, pruner {html.escape(definition.pruner)}, "
            f"up to {definition.epochs} epochs per trial",
        ),
        ("MLflow", _mlflow_note(definition)),
        (
            "Versions",
            f"ecgsearch {html.escape(definition.ecgsearch_version)}, optuna "
            f"{html.escape(definition.optuna_version)}, torch {html.escape(definition.torch_version)}",
        ),
    ]
    header_rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    toc = " · ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"ecgsearch report: {study.study_name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; }}
h1 {{ margin-bottom: .2rem; }} h2 {{ margin-top: 2.5rem; border-bottom: 1px solid #ddd; }}
table.facts th {{ text-align: left; padding-right: 1.5rem; vertical-align: top; color: #555; }}
table.trials {{ border-collapse: collapse; width: 100%; font-size: .9rem; }}
table.trials th, table.trials td {{ border-bottom: 1px solid #eee; padding: .35rem .5rem; text-align: left;
                                    vertical-align: top; }}
td.params {{ font-family: ui-monospace, monospace; font-size: .8rem; }}
p.note {{ background: #fff8e1; border-left: 4px solid #ffb300; padding: .6rem 1rem; }}
.sub {{ color: #666; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="sub">Generated {generated} by <code>ecgsearch report</code>.</p>
<table class="facts">{header_rows}</table>
<nav><p>{toc}</p></nav>
{body}
</body></html>
"""
