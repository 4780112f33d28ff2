"""`ecgsearch worker`: join an existing study from any machine, with only its storage and name."""

from __future__ import annotations

import click
from rich.text import Text

from search.cli.console import out
from search.cli.fleet import plan_from_flags, run_here, worker_settings
from search.cli.options import check_heartbeat, example, mlflow_option, storage_option, worker_options
from search.cli.status import describe_study
from studies import budget_of


@click.command(
    "worker",
    short_help="join an existing study and run its trials here",
    epilog=example("ecgsearch worker --study cnn_lstm --storage postgresql+psycopg://ecg@db-host/ecgsearch --gpus all"),
)
@click.option("--study", "study_name", required=True, help="name of an existing study")
@click.option(
    "--data",
    default=None,
    metavar="DIR",
    help="dataset folder on this machine (default: the path stored in the study); its fingerprint must match "
    "the study's",
)
@click.option(
    "--worker-label",
    envvar="ECGSEARCH_WORKER_LABEL",
    show_envvar=True,
    default=None,
    metavar="TEXT",
    help="this worker's name in a fleet (e.g. a Kubernetes Indexed Job's completion index): stored on its trials "
    "as user attr worker_label and mixed into its sampler seed",
)
@storage_option
@mlflow_option
@worker_options
@click.pass_context
def command(ctx: click.Context, **params: object) -> int:
    """Join a study created by `ecgsearch start` (on this or another machine). Everything else (space, data
    fingerprint, objective, epochs, sampler, pruner) is read from the study; the worker refuses to join when
    its data or versions differ.

    Every worker process seeds its sampler with the study's seed and its own identity (host, pid, start
    time), so workers never propose the same configs; each trial's training is seeded with seed + trial number.
    """
    from search.optimize.study_setup import join_study

    check_heartbeat(ctx)
    slots = plan_from_flags(ctx)
    storage_url, study_name = ctx.params["storage"], ctx.params["study_name"]
    joined = join_study(
        storage_url,
        study_name,
        mlflow_uri=ctx.params["mlflow_uri"],
        heartbeat_interval_s=ctx.params["heartbeat_interval"],
        grace_period_s=ctx.params["grace_period"],
    )
    if not ctx.params["no_progress"]:
        out.print(
            Text("joining ")
            + describe_study(study_name, joined.loaded.definition, storage_url, budget_of(joined.loaded.study))
        )
    settings = worker_settings(
        ctx, study_name=study_name, storage_url=storage_url, mlflow_uri=joined.tracking_uri, data_dir=ctx.params["data"]
    )
    run_here(ctx, settings, slots, joined.loaded)
    return 0
