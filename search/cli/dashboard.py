"""`ecgsearch dashboard`: optuna-dashboard on the storage the studies use."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from search.cli.options import add_command, add_storage_flag

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "dashboard",
        help="serve optuna-dashboard on the study storage",
        description="Serve optuna-dashboard (live trials, learning curves, importances) on the same "
        "storage `ecgsearch start` and the workers use. It listens on the loopback interface by "
        "default; it has no authentication, so reach it from elsewhere through an SSH tunnel "
        "(ssh -L 8080:127.0.0.1:8080 host) rather than binding it to a public address.",
        example="ecgsearch dashboard --storage postgresql+psycopg://ecg@db.lab:5432/ecgsearch --port 8080",
    )
    add_storage_flag(parser)
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on; anything but loopback exposes the dashboard, which has no "
        "authentication, to the network",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument(
        "--artifact-dir",
        type=Path,
        default=None,
        help="folder of Optuna artifacts to serve beside the trials (created if missing)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from search.errors import UsageError
    from search.report.dashboard import is_loopback, open_existing_storage, serve_dashboard
    from studies import mask_secrets, resolve_storage_url

    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: expected a port number between 1 and 65535")
    url = resolve_storage_url(args.storage)
    storage = open_existing_storage(url)
    if not is_loopback(args.host):
        print(
            f"warning: listening on {args.host}, reachable from other machines. optuna-dashboard has "
            "no authentication: anyone who reaches this port can read and edit the studies. Prefer "
            "the default --host 127.0.0.1 and an SSH tunnel.",
            file=sys.stderr,
            flush=True,
        )

    def announce(dashboard: str) -> None:
        print(f"optuna-dashboard for {mask_secrets(url)}", flush=True)
        print(f"  open {dashboard}  (Ctrl-C to stop)", flush=True)

    try:
        serve_dashboard(storage, host=args.host, port=args.port, artifact_dir=args.artifact_dir, on_listening=announce)
    except OSError as error:
        raise UsageError(
            f"--host {args.host} --port {args.port}: cannot listen there ({error.strerror or error}). "
            "Pick another --port, or stop what is using it."
        ) from None
    print("Dashboard stopped.", flush=True)
    return 0
