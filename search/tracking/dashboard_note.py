"""A trial as optuna-dashboard shows it: a Markdown note and its learning curve as an Optuna artifact.

Like the trial's MLflow run, both are projections of the trial in the study database, written by the worker
once the trial has ended. The note says what the dashboard cannot: the family, the parameter count and
costs, how the trial ended and why, and where its MLflow run is. The learning curve is a small SVG (the
dashboard shows images inline), stored in a `FileSystemArtifactStore` folder the dashboard serves
(`ecgsearch dashboard --artifact-dir`, by default the study's own). Neither may stop a worker: a failure
to write them is logged and the search goes on.
"""

from __future__ import annotations

import html
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search.tracking import names
from search.tracking.projection import was_trained
from search.tracking.uri import mlflow_run_link
from studies import StudyDefinition, is_infeasible, trial_family

log = logging.getLogger(__name__)
CURVE_FILE = "learning_curve_trial{number}.svg"
_WIDTH, _HEIGHT, _MARGIN = 480, 240, 40
# The user attr of a warm-start trial (`search.optimize.warm_start.WARM_START_ATTR`, a layer above this one).
WARM_START_KEY = "warm_start_from"


def trial_note(trial: FrozenTrial, definition: StudyDefinition, study_name: str) -> str:
    """The Markdown note of a finished trial."""
    attrs = trial.user_attrs
    lines = [f"### Trial {trial.number}: {trial_family(trial) or 'unknown family'}", ""]
    n_params = attrs.get("n_params") or (attrs.get("cost") or {}).get("params")
    if n_params is not None:
        lines.append(f"- **parameters**: {int(n_params):,}")
    for name, value in (attrs.get("cost") or {}).items():
        if name != "params":
            lines.append(f"- **{name}**: {value:,.0f}" if name == "flops" else f"- **{name}**: {value:.3f}")
    if trial.constraints:
        # optuna-dashboard 0.21 reads only Optuna's older constraint list, not `set_constraint`'s keys: shown here.
        shown = ", ".join(f"{name} {value:+.3f}" for name, value in sorted(trial.constraints.items()))
        lines.append(f"- **constraints** (cost / limit - 1, feasible at <= 0): {shown}")
    lines.append(f"- **ended**: {_how_it_ended(trial, definition)}")
    if attrs.get(WARM_START_KEY):
        lines.append(f"- **warm start**: replays trial `{attrs[WARM_START_KEY]}`")
    lines.append(f"- **MLflow**: {_mlflow_pointer(trial, definition, study_name)}")
    config = attrs.get("config")
    if isinstance(config, dict):  # the dashboard shows the user attr as one long JSON line
        lines += ["", "| config | value |", "| --- | --- |"]
        lines += [f"| {key} | `{json.dumps(value)}` |" for key, value in config.items()]
    return "\n".join(lines) + "\n"


def _how_it_ended(trial: FrozenTrial, definition: StudyDefinition) -> str:
    attrs, state = trial.user_attrs, trial.state.name
    epochs = len(attrs.get("history") or [])
    if is_infeasible(trial):
        return f"PRUNED before training, {attrs.get('infeasible') or 'a constraint is violated'}"
    if state == "COMPLETE":
        values = ", ".join(
            f"{name} = {value:.4g}" for name, value in zip(definition.metric_names(), trial.values, strict=False)
        )
        return f"COMPLETE after {epochs} of {definition.epochs} epochs: {values}"
    if state == "PRUNED":
        return f"PRUNED at epoch {attrs.get('pruned_at_epoch', epochs)} of {definition.epochs} by the pruner"
    return f"{state}: {attrs.get('fail_reason') or 'no reason recorded'}"


def _mlflow_pointer(trial: FrozenTrial, definition: StudyDefinition, study_name: str) -> str:
    if not was_trained(trial):
        return "no run (stopped before training: only trained trials are mirrored)"
    run_id = trial.user_attrs.get("mlflow_run_id")
    link = trial.user_attrs.get("mlflow_run_url") or (
        mlflow_run_link(definition.mlflow_tracking_uri, definition.mlflow_experiment_id, str(run_id))
        if run_id
        else None
    )
    if link:
        return f"[run {run_id}]({link})"
    if run_id:
        return f"run `{run_id}` in experiment `{names.experiment_name(study_name)}` ({definition.mlflow_tracking_uri})"
    if definition.mlflow_experiment_id is None:
        return "not mirrored (mirroring was off)"
    return f"run `{names.run_name(trial.number)}` in experiment `{names.experiment_name(study_name)}`"


def learning_curve_svg(history: list[dict[str, Any]], objective: str) -> str | None:
    """The validation objective (and the training loss, scaled to the same axis) per epoch, as an SVG; None
    without a finished epoch."""
    key = f"val_{objective}"
    points = [(int(e["epoch"]), float(e[key])) for e in history if isinstance(e.get(key), int | float)]
    points = [(epoch, value) for epoch, value in points if math.isfinite(value)]
    if not points:
        return None
    last_epoch = max(max(epoch for epoch, _ in points), 2)
    low, high = min(v for _, v in points), max(v for _, v in points)
    low, high = (low - 0.05, high + 0.05) if high - low < 1e-9 else (low, high)

    def xy(epoch: int, value: float) -> str:
        x = _MARGIN + (epoch - 1) / (last_epoch - 1) * (_WIDTH - 2 * _MARGIN)
        y = _HEIGHT - _MARGIN - (value - low) / (high - low) * (_HEIGHT - 2 * _MARGIN)
        return f"{x:.1f},{y:.1f}"

    path = " ".join(xy(epoch, value) for epoch, value in points)
    label = html.escape(key)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" font-family="sans-serif" '
        f'font-size="12"><rect width="100%" height="100%" fill="white"/>'
        f'<text x="{_MARGIN}" y="20">{label} per epoch</text>'
        f'<text x="4" y="{_MARGIN + 4}">{high:.3f}</text><text x="4" y="{_HEIGHT - _MARGIN + 4}">{low:.3f}</text>'
        f'<text x="{_WIDTH - _MARGIN - 30}" y="{_HEIGHT - 10}">epoch {last_epoch}</text>'
        f'<line x1="{_MARGIN}" y1="{_HEIGHT - _MARGIN}" x2="{_WIDTH - _MARGIN}" y2="{_HEIGHT - _MARGIN}" '
        f'stroke="#999"/><polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{path}"/>'
        + "".join(
            f'<circle cx="{xy(e, v).split(",")[0]}" cy="{xy(e, v).split(",")[1]}" r="3" fill="#1f77b4"/>'
            for e, v in points
        )
        + "</svg>\n"
    )


def annotate_trial(study: optuna.Study, trial: FrozenTrial, definition: StudyDefinition) -> None:
    """Write the finished trial's dashboard note (a study attribute, so it can be written once the trial has
    ended and its state is known); log, never raise, when it cannot be written."""
    from optuna_dashboard import save_note

    try:
        save_note(optuna.Trial(study, trial._trial_id), trial_note(trial, definition, study.study_name))
    except Exception as error:  # a view of the trial; the trial itself is safe in the database
        log.warning("optuna-dashboard note of trial %d not written: %s", trial.number, error)


def store_learning_curve(trial: optuna.Trial, history: list[dict[str, Any]], definition: StudyDefinition) -> None:
    """Upload the trial's learning curve as an Optuna artifact while it still runs (Optuna refuses to attach
    anything to a finished trial); nothing when the study keeps no artifacts or no epoch finished."""
    svg = learning_curve_svg(history, definition.objective)
    if svg is None or not definition.artifact_dir:
        return
    try:
        upload_curve(trial, svg, Path(definition.artifact_dir))
    except Exception as error:  # a view of the trial, as the note is
        log.warning("learning curve of trial %d not stored as an Optuna artifact: %s", trial.number, error)


def upload_curve(trial: optuna.Trial, svg: str, artifact_dir: Path) -> str:
    """Store the SVG as an Optuna artifact of the running trial; its artifact id."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    artifact_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ecgsearch-curve-") as folder:
        path = Path(folder) / CURVE_FILE.format(number=trial.number)
        path.write_text(svg, encoding="utf-8")
        return upload_artifact(
            artifact_store=FileSystemArtifactStore(str(artifact_dir)),
            file_path=str(path),
            study_or_trial=trial,
            mimetype="image/svg+xml",
        )
