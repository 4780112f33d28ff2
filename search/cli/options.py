"""Flags shared by several subcommands, so each is spelled and documented once."""

from __future__ import annotations

import argparse
import os

from search.cli import HelpFormatter


def add_command(subparsers, name: str, *, help: str, description: str, example: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog=f"Example:\n  {example}",
        formatter_class=HelpFormatter,
    )


def add_storage_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=None,
        help="study database URL (sqlite:///ecgsearch.db, postgresql+psycopg://user:pw@host/db); "
        "default: $ECGSEARCH_STORAGE, else sqlite:///ecgsearch.db in the working directory",
    )


def add_mlflow_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mlflow-uri",
        default=None,
        help="MLflow tracking URI; default: $MLFLOW_TRACKING_URI, else the store the study is mirrored to "
        "(unless its URI held a password), else sqlite:///mlflow.db beside the study database; 'off' disables "
        "mirroring",
    )


def mlflow_flag_value(args: argparse.Namespace) -> str | None:
    """`--mlflow-uri`, else `$MLFLOW_TRACKING_URI`: what `search.tracking.resolve_tracking_uri` gets as the
    user's choice (the tracking package reads no environment variable)."""
    return args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
