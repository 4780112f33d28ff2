"""`ecgsearch worker`: join an existing study from any machine, with only its storage and name."""

from __future__ import annotations

import argparse

from search.cli.options import add_command, add_mlflow_flag, add_storage_flag, mlflow_flag_value
from search.cli.run_workers import add_worker_flags, console, describe_study, run_study_workers


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "worker",
        help="join an existing study and run its trials here",
        description="Join a study created by `ecgsearch start` (on this or another machine). Everything else "
        "(space, data fingerprint, objective, epochs, sampler, pruner) is read from the study; the worker "
        "refuses to join when its data or versions differ.",
        example="ecgsearch worker --study cnn_lstm --storage postgresql+psycopg://ecg@db-host/ecgsearch --gpus all",
    )
    parser.add_argument("--study", required=True, help="name of an existing study")
    parser.add_argument(
        "--data",
        default=None,
        help="dataset folder on this machine (default: the path stored in the study); "
        "its fingerprint must match the study's",
    )
    add_storage_flag(parser)
    add_mlflow_flag(parser)
    add_worker_flags(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from search.tracking import resolve_tracking_uri
    from studies import budget_of, load_study_with_definition, open_storage, resolve_storage_url

    storage_url = resolve_storage_url(args.storage)
    storage = open_storage(storage_url, heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period)
    study, definition = load_study_with_definition(storage, args.study)
    mlflow_uri = resolve_tracking_uri(mlflow_flag_value(args), storage_url, definition.mlflow_tracking_uri)
    if not args.no_progress:
        console.print("joining " + describe_study(args.study, definition, storage_url, budget_of(study)))
    return run_study_workers(
        args, study_name=args.study, storage_url=storage_url, mlflow_uri=mlflow_uri, data_dir=args.data, storage=storage
    )
