"""`ecgsearch report`: one self-contained HTML page about a study."""

from __future__ import annotations

from pathlib import Path

import click

from search.cli.console import out
from search.cli.options import example, storage_option

# Kept here rather than imported from search.report.page so `ecgsearch --help` does not load plotly.
DEFAULT_TOP_N = 20


@click.command(
    "report",
    short_help="write a self-contained HTML report of a study",
    epilog=example("ecgsearch report --study cnn_lstm --out report.html"),
)
@click.option("--study", "study_name", required=True, help="name of the study to report on")
@storage_option
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("report.html"),
    show_default=True,
    help="HTML file to write",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=DEFAULT_TOP_N,
    show_default=True,
    help="how many of the best trials to list",
)
def command(study_name: str, storage: str, out_path: Path, top: int) -> int:
    """Write one HTML page (works offline, plotly embedded) with the optimisation history, learning curves of
    every trial (pruned ones included), parameter importances, parallel coordinates, the best value per
    architecture family and a table of the top trials with links to their MLflow runs.
    """
    from search.report.page import write_report
    from studies import load_study_with_definition, mask_secrets, open_existing_storage

    study, definition = load_study_with_definition(open_existing_storage(storage), study_name)
    summary = write_report(study, definition, out_path, storage_label=mask_secrets(storage), top_n=top)
    best = (
        f"best {definition.objective} {summary.best_value:.4f} (trial {summary.best_trial})"
        if summary.best_value is not None
        else "no completed trial yet"
    )
    out.print(
        f"Wrote {summary.path}: {summary.n_trials} trials ({summary.n_complete} completed), {best}; "
        f"{len(summary.figures)} figures."
    )
    return 0
