"""`ecgsearch status`: trials by state, the best so far, and which workers run what right now."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from search.cli.options import add_command, add_storage_flag

console = Console(highlight=False)


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "status",
        help="show a study's trials by state, best so far and live workers",
        description="Trials by state, the best value and its parameters, and the trials running now with "
        "their worker (host, pid, device), epoch reached and last heartbeat. Without --study, lists every "
        "study in the storage.",
        example="ecgsearch status --study cnn_lstm --storage sqlite:///ecgsearch.db",
    )
    parser.add_argument("--study", default=None, help="study name (default: list all studies)")
    add_storage_flag(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from studies import (
        list_studies,
        load_study_with_definition,
        mask_secrets,
        open_storage,
        render_summary,
        resolve_storage_url,
        summarise,
    )

    storage_url = resolve_storage_url(args.storage)
    storage = open_storage(storage_url)
    if args.study:
        study, definition = load_study_with_definition(storage, args.study)
        console.print(render_summary(summarise(study, definition)))
        return 0
    listings = list_studies(storage)
    table = Table(title=f"studies in {mask_secrets(storage_url)}")
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
    console.print(
        table if listings else f"no study yet in {mask_secrets(storage_url)}; create one with `ecgsearch start`"
    )
    return 0
