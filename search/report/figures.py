"""The report's figures, one function each: a plotly figure, or the sentence saying why there is none.

Optuna's own plots where they show what the report needs (optimisation history, parameter
importances, parallel coordinates); the learning curves and the per-family bars are drawn here,
because Optuna's `plot_intermediate_values` neither tells pruned from completed trials nor names a
trial's family, and no Optuna plot groups trials by family.
"""

from __future__ import annotations

import html
import math
from collections import Counter

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from studies import COST_OBJECTIVES, quality_value, trial_family

# PED-ANOVA compares the top quantile of trials with all of them: with fewer completed trials
# than this, the "importances" are noise and would mislead more than inform.
MIN_TRIALS_FOR_IMPORTANCE = 5
MIN_TRIALS_FOR_PARALLEL = 2
PARALLEL_MAX_PARAMS = 8

_STATE_STYLE = {
    # Pruned curves stay visible but read as second-class: dashed and lighter.
    TrialState.COMPLETE: {"color": "#1f77b4", "dash": "solid", "opacity": 0.9},
    TrialState.PRUNED: {"color": "#ff7f0e", "dash": "dash", "opacity": 0.55},
    TrialState.FAIL: {"color": "#d62728", "dash": "dot", "opacity": 0.55},
    TrialState.RUNNING: {"color": "#7f7f7f", "dash": "dot", "opacity": 0.7},
    TrialState.WAITING: {"color": "#7f7f7f", "dash": "dot", "opacity": 0.7},
}

FigureOrNote = go.Figure | str


def quality_target(study: optuna.Study):
    """Optuna's plots need a target in a multi-objective study: the quality objective, the first value."""
    return (lambda trial: trial.values[0]) if len(study.directions) > 1 else None


def family_label(trial: FrozenTrial) -> str:
    return trial_family(trial) or "unknown"


def param_importances(study: optuna.Study, completed: list[FrozenTrial]) -> tuple[dict[str, float], str]:
    """Parameter -> importance (PED-ANOVA, most important first), or {} and the reason there are none."""
    if len(completed) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, (
            f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials; "
            f"this study has {len(completed)}. They will appear once more trials finish."
        )
    try:
        importances = optuna.importance.get_param_importances(study, target=quality_target(study))
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return {}, f"Parameter importances could not be computed: {error}"
    if not importances:
        return {}, "Parameter importances could not be computed: the completed trials share no parameter."
    return dict(importances), ""


def history_figure(study: optuna.Study, completed: list[FrozenTrial], objective: str) -> FigureOrNote:
    if not completed:
        return "No trial has completed yet, so there is no objective value to plot."
    fig = optuna.visualization.plot_optimization_history(study, target=quality_target(study), target_name=objective)
    fig.update_layout(title={"text": "Optimisation history"}, xaxis_title="trial", yaxis_title=objective)
    return fig


def epoch_values(trial: FrozenTrial, objective: str) -> dict[int, float]:
    """The validation objective per epoch: the steps reported to Optuna, else (a multi-objective trial, which
    reports none) the trial's stored `history`."""
    if trial.intermediate_values:
        return dict(trial.intermediate_values)
    history = trial.user_attrs.get("history")
    if not isinstance(history, list):
        return {}
    key = f"val_{objective}"
    return {
        int(entry["epoch"]): float(entry[key])
        for entry in history
        if isinstance(entry, dict) and "epoch" in entry and isinstance(entry.get(key), int | float)
    }


def curves_figure(trials: list[FrozenTrial], objective: str) -> FigureOrNote:
    with_steps = [t for t in trials if epoch_values(t, objective)]
    if not with_steps:
        return "No trial has reported an epoch yet, so there are no learning curves."
    fig = go.Figure()
    legend_shown: set[TrialState] = set()
    for trial in with_steps:
        fig.add_trace(_curve(trial, objective, show_legend=trial.state not in legend_shown))
        legend_shown.add(trial.state)
    fig.update_layout(
        title={"text": "Learning curves (validation objective per epoch)"},
        xaxis_title="epoch",
        yaxis_title=f"validation {objective}",
        legend_title_text="state",
    )
    return fig


def _curve(trial: FrozenTrial, objective: str, *, show_legend: bool) -> go.Scatter:
    style = _STATE_STYLE.get(trial.state, _STATE_STYLE[TrialState.RUNNING])
    curve = epoch_values(trial, objective)
    steps = sorted(curve)
    values = [curve[s] for s in steps]
    state = trial.state.name.lower()
    return go.Scatter(
        x=steps,
        y=[v if math.isfinite(v) else None for v in values],
        mode="lines+markers",
        name=state,
        legendgroup=trial.state.name,
        showlegend=show_legend,
        line={"color": style["color"], "dash": style["dash"], "width": 1.5},
        marker={"size": 4, "symbol": "x" if trial.state == TrialState.PRUNED else "circle"},
        opacity=style["opacity"],
        # Hover text is HTML to plotly: a family name is escaped like any other text.
        hovertemplate=(
            f"trial {trial.number} ({html.escape(family_label(trial))}, {state})"
            "<br>epoch %{x}<br>" + html.escape(objective) + " %{y:.4f}<extra></extra>"
        ),
    )


def importance_figure(study: optuna.Study, importances: dict[str, float], objective: str) -> go.Figure:
    """Optuna's importance plot (the same PED-ANOVA evaluator as `param_importances`), most important on top."""
    fig = optuna.visualization.plot_param_importances(
        study, params=list(importances), target=quality_target(study), target_name=objective
    )
    fig.update_layout(
        title={"text": "Parameter importances (PED-ANOVA, completed trials)"},
        xaxis_title="importance (normalised)",
        yaxis_title=None,
        height=max(300, 28 * len(importances) + 120),
    )
    return fig


def parallel_figure(
    study: optuna.Study, completed: list[FrozenTrial], importances: dict[str, float], objective: str
) -> FigureOrNote:
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
    fig = optuna.visualization.plot_parallel_coordinate(
        study, params=sorted(params), target=quality_target(study), target_name=objective
    )
    fig.update_layout(title={"text": "Parallel coordinates (completed trials, most important parameters)"})
    return fig


def family_figure(trials: list[FrozenTrial], maximize: bool, objective: str) -> FigureOrNote:
    by_family: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        by_family.setdefault(family_label(trial), []).append(trial)
    best: dict[str, float] = {}
    for family, members in by_family.items():
        values = [quality_value(t) for t in members if t.state == TrialState.COMPLETE and t.values]
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
    return fig


def tradeoff_figure(
    completed: list[FrozenTrial], front: list[FrozenTrial], metric_names: list[str], objective: str
) -> FigureOrNote:
    """Quality against each cost, one panel per cost, every completed trial a dot, the Pareto front joined
    and highlighted (a front point is the best quality for its cost in the study as a whole)."""
    from plotly.subplots import make_subplots

    if not completed:
        return "No trial has completed yet, so there is no trade-off to plot."
    costs = [(index, name) for index, name in enumerate(metric_names) if name in COST_OBJECTIVES]
    fig = make_subplots(rows=1, cols=len(costs), subplot_titles=[f"{objective} vs {name}" for _, name in costs])
    on_front = {t.number for t in front}
    for column, (index, name) in enumerate(costs, start=1):
        for label, members, style in (
            ("trials", [t for t in completed if t.number not in on_front], {"color": "#9aa5b1", "size": 7}),
            ("Pareto front", sorted(front, key=lambda t: t.values[index]), {"color": "#d62728", "size": 11}),
        ):
            fig.add_trace(
                go.Scatter(
                    x=[t.values[index] for t in members],
                    y=[t.values[0] for t in members],
                    mode="markers" if label == "trials" else "lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=column == 1,
                    marker=style,
                    line={"shape": "hv", "color": style["color"]},
                    text=[f"trial {t.number} ({html.escape(family_label(t))})" for t in members],
                    hovertemplate="%{text}<br>" + f"{name} %{{x:.4g}}<br>{objective} %{{y:.4f}}<extra></extra>",
                ),
                row=1,
                col=column,
            )
        fig.update_xaxes(title_text=name, type="log" if name != "latency_ms" else "linear", row=1, col=column)
    fig.update_yaxes(title_text=f"validation {objective}", row=1, col=1)
    fig.update_layout(title={"text": "Quality against cost (Pareto front highlighted)"})
    return fig


class FigureRenderer:
    """Renders figures to HTML fragments, embedding plotly.js with the first one only."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def render(self, div_id: str, fig: go.Figure) -> str:
        fig.update_layout(template="plotly_white", margin={"l": 60, "r": 30, "t": 60, "b": 50})
        fragment = fig.to_html(
            full_html=False,
            include_plotlyjs=not self.ids,
            div_id=div_id,
            config={"displaylogo": False, "responsive": True},
        )
        self.ids.append(div_id)
        return fragment
