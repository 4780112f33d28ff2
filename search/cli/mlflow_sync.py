"""`ecgsearch mlflow-sync`: rebuild or complete a study's MLflow mirror from the Optuna database alone."""

from __future__ import annotations

import argparse

from search.cli.options import add_command, add_mlflow_flag, add_storage_flag, mlflow_flag_value


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "mlflow-sync",
        help="rebuild or complete the MLflow runs of a study from the study database",
        description="For every trial of the study, find or create its MLflow child run and log what it "
        "lacks: params and config, per-epoch metrics, state and status, objective, parameter count; "
        "then the parent run's best value. Safe to run any time, as often as wanted: runs are never "
        "duplicated and a second run changes nothing.",
        example="ecgsearch mlflow-sync --study cnn_lstm --storage sqlite:///ecgsearch.db "
        "--mlflow-uri http://127.0.0.1:5000",
    )
    parser.add_argument("--study", required=True, help="name of the study to mirror")
    add_storage_flag(parser)
    add_mlflow_flag(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from search.errors import UsageError
    from search.tracking import definition_tags, resolve_tracking_uri, same_store, sync_study
    from search.tracking.uri import OFF
    from studies import load_study_with_definition, mask_secrets, open_storage, resolve_storage_url

    storage_url = resolve_storage_url(args.storage)
    study, definition = load_study_with_definition(open_storage(storage_url), args.study)
    if args.mlflow_uri is not None and args.mlflow_uri.strip().lower() == OFF:
        raise UsageError("--mlflow-uri off: mlflow-sync needs a tracking URI to write to.")
    # The store the study was mirrored to, unless the user names another one.
    tracking_uri = resolve_tracking_uri(mlflow_flag_value(args), storage_url, definition.mlflow_tracking_uri)
    if tracking_uri is None:
        raise UsageError("MLFLOW_TRACKING_URI is 'off': pass the tracking URI to write to with --mlflow-uri.")
    known = same_store(tracking_uri, definition.mlflow_tracking_uri)
    summary = sync_study(
        study,
        tracking_uri=tracking_uri,
        experiment_id=definition.mlflow_experiment_id if known else None,
        parent_run_id=definition.mlflow_parent_run_id if known else None,
        study_tags=definition_tags(study_name=study.study_name, definition=definition, storage_url=storage_url),
    )
    Console(highlight=False, soft_wrap=True).print(
        f"MLflow mirror of study [bold]{study.study_name}[/bold] ({mask_secrets(storage_url)}) at "
        f"{mask_secrets(tracking_uri)}, experiment {summary['experiment_id']}: "
        f"{summary['created']} runs created, {summary['updated']} updated, {summary['unchanged']} unchanged"
        + (f", {summary['duplicates_removed']} duplicates removed" if summary["duplicates_removed"] else "")
        + "."
    )
    return 0
