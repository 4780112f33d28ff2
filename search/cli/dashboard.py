"""`ecgsearch dashboard`: optuna-dashboard on the storage the studies use."""

from __future__ import annotations

from pathlib import Path

import click

from search.cli.console import out, print_warning
from search.cli.options import example, storage_option

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@click.command(
    "dashboard",
    short_help="serve optuna-dashboard on the study storage",
    epilog=example("ecgsearch dashboard --storage postgresql+psycopg://ecg@db.lab:5432/ecgsearch --port 8080"),
)
@storage_option
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="address to listen on; anything but loopback exposes the dashboard, which has no authentication, "
    "to the network",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True, help="port to listen on"
)
@click.option(
    "--artifact-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="folder of Optuna artifacts to serve beside the trials, e.g. the learning curves workers store (default: "
    "optuna-artifacts beside a SQLite study database, where `ecgsearch start` puts them)",
)
def command(storage: str, host: str, port: int, artifact_dir: Path | None) -> int:
    """Serve optuna-dashboard (live trials, learning curves, importances) on the same storage `ecgsearch
    start` and the workers use. It listens on the loopback interface by default; it has no authentication, so
    reach it from elsewhere through an SSH tunnel (ssh -L 8080:127.0.0.1:8080 host) rather than binding it to
    a public address.
    """
    from search.errors import UsageError
    from search.report.dashboard import is_loopback, serve_dashboard
    from studies import mask_secrets, open_existing_storage, sqlite_artifact_dir

    opened = open_existing_storage(storage)
    if artifact_dir is None and sqlite_artifact_dir(storage) is not None:
        artifact_dir = Path(sqlite_artifact_dir(storage))
    if not is_loopback(host):
        print_warning(
            f"listening on {host}, reachable from other machines. optuna-dashboard has no authentication: "
            "anyone who reaches this port can read and edit the studies. Prefer the default --host 127.0.0.1 "
            "and an SSH tunnel.",
            stderr=True,
        )

    def announce(dashboard: str) -> None:
        out.print(f"optuna-dashboard for {mask_secrets(storage)}")
        out.print(f"  open {dashboard}  (Ctrl-C to stop)")

    try:
        serve_dashboard(opened, host=host, port=port, artifact_dir=artifact_dir, on_listening=announce)
    except OSError as error:
        raise UsageError(
            f"--host {host} --port {port}: cannot listen there ({error.strerror or error}). "
            "Pick another --port, or stop what is using it."
        ) from None
    out.print("Dashboard stopped.")
    return 0
