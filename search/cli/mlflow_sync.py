"""`ecgsearch mlflow-sync`: rebuild or complete a study's MLflow mirror from the Optuna database alone."""

from __future__ import annotations

import click
from rich.text import Text

from search.cli.console import out
from search.cli.options import example, mlflow_option, storage_option


@click.command(
    "mlflow-sync",
    short_help="rebuild or complete the MLflow runs of a study from the study database",
    epilog=example(
        "ecgsearch mlflow-sync --study cnn_lstm --storage sqlite:///ecgsearch.db --mlflow-uri http://127.0.0.1:5000"
    ),
)
@click.option("--study", "study_name", required=True, help="name of the study to mirror")
@storage_option
@mlflow_option
def command(study_name: str, storage: str, mlflow_uri: str | None) -> int:
    """For every trial of the study, find or create its MLflow child run and log what it lacks: params and
    config, per-epoch metrics, state and status, objective, parameter count; then the parent run's best
    value. Safe to run any time, as often as wanted: runs are never duplicated and a second run changes nothing.
    """
    from search.errors import UsageError
    from search.tracking import definition_tags, resolve_tracking_uri, same_store, sync_study
    from search.tracking.uri import OFF
    from studies import load_study_with_definition, mask_secrets, open_existing_storage

    study, definition = load_study_with_definition(open_existing_storage(storage), study_name)
    if mlflow_uri is not None and mlflow_uri.strip().lower() == OFF:
        raise UsageError("--mlflow-uri off (or MLFLOW_TRACKING_URI=off): mlflow-sync needs a tracking URI to write to.")
    # The store the study was mirrored to, unless the user names another one.
    tracking_uri = resolve_tracking_uri(mlflow_uri, storage, definition.mlflow_tracking_uri)
    assert tracking_uri is not None  # "off" was refused above
    known = same_store(tracking_uri, definition.mlflow_tracking_uri)
    summary = sync_study(
        study,
        tracking_uri=tracking_uri,
        experiment_id=definition.mlflow_experiment_id if known else None,
        parent_run_id=definition.mlflow_parent_run_id if known else None,
        study_tags=definition_tags(study_name=study.study_name, definition=definition, storage_url=storage),
    )
    duplicates = summary["duplicates_removed"]
    out.print(
        Text.assemble(
            "MLflow mirror of study ",
            (study.study_name, "bold"),
            f" ({mask_secrets(storage)}) at {mask_secrets(tracking_uri)}, experiment {summary['experiment_id']}: "
            f"{summary['created']} runs created, {summary['updated']} updated, {summary['unchanged']} unchanged"
            + (f", {duplicates} duplicates removed" if duplicates else "")
            + ".",
        )
    )
    return 0
