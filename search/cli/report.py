"""`ecgsearch report`: one self-contained HTML page about a study."""

from __future__ import annotations

import argparse
from pathlib import Path

from search.cli.options import add_command, add_storage_flag

# Kept here rather than imported from search.report.page so `ecgsearch --help` does not load plotly.
DEFAULT_TOP_N = 20


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "report",
        help="write a self-contained HTML report of a study",
        description="Write one HTML page (works offline, plotly embedded) with the optimisation "
        "history, learning curves of every trial (pruned ones included), parameter importances, "
        "parallel coordinates, the best value per architecture family and a table of the top "
        "trials with links to their MLflow runs.",
        example="ecgsearch report --study cnn_lstm --out report.html",
    )
    parser.add_argument("--study", required=True, help="name of the study to report on")
    add_storage_flag(parser)
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP_N, help="how many of the best trials to list")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from search.errors import UsageError
    from search.report.dashboard import open_existing_storage
    from search.report.page import write_report
    from studies import load_study_with_definition, mask_secrets, resolve_storage_url

    if args.top < 1:
        raise UsageError(f"--top {args.top}: expected a positive number of trials to list")
    if args.out.is_dir():
        raise UsageError(f"--out {args.out}: is a folder; expected an HTML file path such as report.html")
    url = resolve_storage_url(args.storage)
    storage = open_existing_storage(url)
    study, definition = load_study_with_definition(storage, args.study)
    summary = write_report(study, definition, args.out, storage_label=mask_secrets(url), top_n=args.top)
    best = (
        f"best {definition.objective} {summary.best_value:.4f} (trial {summary.best_trial})"
        if summary.best_value is not None
        else "no completed trial yet"
    )
    print(
        f"Wrote {summary.path}: {summary.n_trials} trials ({summary.n_complete} completed), {best}; "
        f"{len(summary.figures)} figures.",
        flush=True,
    )
    return 0
