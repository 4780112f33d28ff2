"""`ecgsearch start`: create the study (or resume it) and work on it here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import optuna
from rich.text import Text

import spaces
from search.cli.console import out, print_note, print_warning
from search.cli.fleet import plan_from_flags, run_here, worker_settings
from search.cli.options import check_heartbeat, example, given, mlflow_option, storage_option, worker_options
from search.cli.status import describe_study
from search.optimize.settings import StudySettings, WarmStartSettings
from search.training.metrics import OBJECTIVES
from studies import (
    COST_OBJECTIVES,
    PRUNERS,
    SAMPLERS,
    best_trial,
    budget_of,
    exported_instead_of_best,
    mask_secrets,
    quality_value,
)

if TYPE_CHECKING:
    from search.optimize.study_setup import PreparedStudy

DEFAULT_TRIALS = 20
# The settings a user may give `start` that are stored in the study (the rest say where and how to run).
STUDY_FIELDS = (
    "trials",
    "epochs",
    "objective",
    "sampler",
    "pruner",
    "min_epochs",
    "seed",
    "max_params",
    "cv_folds",
    "selection",
    "selection_window",
    "fs",
    "objectives",
    "max_flops",
    "max_latency_ms",
)


@click.command(
    "start",
    short_help="create or resume a study and run its trials here",
    epilog=example(
        "ecgsearch start --space cnn_lstm --data data/mitdb --trials 50 --epochs 20",
        "ecgsearch start --space cnn --study cnn-small --objectives roc_auc,latency_ms --max-params 150000",
        "ecgsearch start --space cnn_lstm --study cnn_lstm-v2 --warm-start-from cnn_lstm --warm-start-top 5",
    ),
)
@click.option("--space", required=True, type=click.Choice(spaces.names()), help="search space")
@click.option("--study", "study_name", default=None, help="study name (default: the space name)")
@click.option(
    "--data",
    default="data/mitdb",
    show_default=True,
    metavar="DIR",
    help="dataset folder (X_train.pt … y_test.pt) or .npz file",
)
@storage_option
@mlflow_option
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=DEFAULT_TRIALS,
    show_default=True,
    metavar="N",
    help="budget for the whole study across all workers: COMPLETE + PRUNED trials (a resumed study keeps "
    "its budget unless --trials is given)",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=10, show_default=True, metavar="E", help="epoch budget per trial"
)
@click.option(
    "--objective",
    type=click.Choice(list(OBJECTIVES)),
    default="roc_auc",
    show_default=True,
    help="validation metric to maximise (a resumed study keeps its own unless --objective is given)",
)
@click.option(
    "--objectives",
    default=None,
    metavar="QUALITY,COST[,COST]",
    help="a multi-objective study: one validation metric to maximise and the costs to minimise, among "
    f"{', '.join(COST_OBJECTIVES)} (e.g. roc_auc,latency_ms); the result is a Pareto front, and trials are not "
    "pruned (each trains every epoch). Instead of --objective",
)
@click.option(
    "--sampler",
    type=click.Choice(SAMPLERS),
    default="tpe",
    show_default=True,
    help="Optuna sampler (tpe handles several objectives too; nsgaii is the genetic alternative for them)",
)
@click.option("--pruner", type=click.Choice(PRUNERS), default="hyperband", show_default=True, help="Optuna pruner")
@click.option(
    "--min-epochs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="E",
    help="the pruner never stops a trial before this many epochs (at most --epochs)",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="trial N trains with seed + N (its training can be repeated); each worker process seeds its sampler "
    "with the seed and its own identity, so the configs proposed differ between workers and between runs",
)
@click.option(
    "--max-params",
    type=click.IntRange(min=1),
    default=2_000_000,
    show_default=True,
    metavar="N",
    help="constraint: architectures with more trainable parameters stop before training (PRUNED, marked "
    "infeasible, outside the budget) and the sampler learns to avoid them",
)
@click.option(
    "--max-flops",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="constraint: FLOPs of one window through the model, as --max-params",
)
@click.option(
    "--max-latency-ms",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="MS",
    help="constraint: median batch-1 latency through ONNX Runtime on one CPU thread, as --max-params (measured "
    "on this machine, noisy when it is busy: leave margin)",
)
@click.option(
    "--warm-start-from",
    default=None,
    metavar="STUDY",
    help="a new study's first trials are the best configurations of this earlier study, adapted to the new "
    "space (parameters it lacks dropped, numbers clamped into its ranges)",
)
@click.option(
    "--warm-start-storage",
    envvar="ECGSEARCH_WARM_START_STORAGE",
    show_envvar=True,
    default=None,
    metavar="URL",
    help="where the --warm-start-from study lives (default: --storage)",
)
@click.option(
    "--warm-start-top",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    metavar="K",
    help="how many of the earlier study's best configurations to enqueue",
)
@click.option(
    "--starting-points/--no-starting-points",
    default=True,
    show_default=True,
    help="a new study's first trials are the space's family defaults (and, for a classifier, the same with the "
    "rhythm branch on), so even a short search starts from what you would get without one; not with "
    "--warm-start-from, whose configurations start the study instead",
)
@click.option(
    "--cv",
    "cv_folds",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="K",
    help="value each trial by patient-grouped K-fold cross-validation over train+val (every patient in one "
    "fold; K models per trial, trained in lockstep, the mean curve reported to the pruner); 0 uses the "
    "data's validation split. Use it when the validation split holds few patients: the search then selects "
    "what generalises to unseen patients instead of what fits a handful of them",
)
@click.option(
    "--selection",
    type=click.Choice(("smoothed", "last", "best")),
    default="smoothed",
    show_default=True,
    help="how a trial's per-epoch curve becomes its value (and which epoch retraining keeps): the best mean "
    "of --selection-window consecutive epochs, the last epoch, or the single best epoch (a lucky spike wins)",
)
@click.option(
    "--selection-window",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    metavar="K",
    help="epochs averaged by --selection smoothed",
)
@click.option(
    "--fs",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="HZ",
    help="sampling rate of the data when its meta.json does not give one (default: 10-second windows assumed)",
)
@click.option(
    "--artifact-dir",
    default=None,
    metavar="DIR",
    help="Optuna artifact store (a folder every worker and the dashboard reach) for each trial's learning curve, "
    "shown by optuna-dashboard (default: optuna-artifacts beside a SQLite study database; none for a server "
    "database unless given); kept by a resumed study",
)
@click.option("--create-only", is_flag=True, help="create (or check) the study and its MLflow experiment, run no trial")
@worker_options
@click.pass_context
def command(ctx: click.Context, **params: object) -> int:
    """Create a study (or resume the one of that name) in the study database and run trials on it in this
    machine's worker processes until the study's trial budget is spent.

    Running it again with a larger --trials adds trials to the same study.
    """
    from search.optimize.study_setup import set_up_study

    _check_epochs(ctx)
    _check_cv(ctx)
    _check_objectives(ctx)
    _check_warm_start(ctx)
    check_heartbeat(ctx)
    slots = None if ctx.params["create_only"] else plan_from_flags(ctx)  # every flag checked before any write
    prepared = set_up_study(_study_settings(ctx))
    study_name, definition = prepared.study.study_name, prepared.definition
    storage_url = ctx.params["storage"]
    out.print(
        Text("created " if prepared.created else "resuming ")
        + describe_study(study_name, definition, storage_url, budget_of(prepared.study))
    )
    if prepared.ignored:
        shown = [
            f"--{item.name.replace('_', '-')} {item.given} (the study keeps {item.kept})" for item in prepared.ignored
        ]
        print_warning("resuming keeps the study's settings; ignored: " + ", ".join(shown))
    for note in prepared.notes:
        print_note(note)
    for warning in prepared.warnings:
        print_warning(warning)
    _report_mirror(prepared, study_name)
    if slots is None:
        return 0
    settings = worker_settings(
        ctx, study_name=study_name, storage_url=storage_url, mlflow_uri=prepared.tracking_uri, data_dir=None
    )
    run_here(ctx, settings, slots, prepared.loaded)
    _print_outcome(prepared.study)
    return 0


def parse_objectives(text: str) -> tuple[str, ...]:
    """`roc_auc,latency_ms` -> ('roc_auc', 'latency_ms'): one quality metric first, then at least one cost.

    Raises ValueError saying what was expected.
    """
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in OBJECTIVES and name not in COST_OBJECTIVES]
    if unknown:
        raise ValueError(
            f"unknown objective(s) {', '.join(unknown)}; quality metrics: {', '.join(OBJECTIVES)}; "
            f"costs: {', '.join(COST_OBJECTIVES)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"an objective is named twice in {text!r}")
    qualities = [name for name in names if name in OBJECTIVES]
    if len(qualities) != 1 or len(names) < 2:
        raise ValueError(
            f"expected exactly one quality metric and at least one cost, e.g. roc_auc,params; got {text!r}"
        )
    return (qualities[0], *(name for name in names if name not in OBJECTIVES))


def _check_objectives(ctx: click.Context) -> None:
    text = ctx.params["objectives"]
    if text is None:
        return
    hint = "'--objectives'"
    try:
        ctx.params["objectives"] = parse_objectives(text)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx=ctx, param_hint=hint) from None
    if given(ctx, "objective"):
        raise click.BadParameter("give --objective or --objectives, not both", ctx=ctx, param_hint=hint)
    if given(ctx, "pruner") and ctx.params["pruner"] != "none":
        raise click.BadParameter(
            f"--pruner {ctx.params['pruner']}: Optuna prunes no multi-objective trial, and pruning on quality alone "
            "would cut the cheap, slightly less accurate models a front is for; every trial trains to the end",
            ctx=ctx,
            param_hint=hint,
        )


def _check_warm_start(ctx: click.Context) -> None:
    if ctx.params["warm_start_from"] is None:
        for name in ("warm_start_storage", "warm_start_top"):
            if given(ctx, name):
                flag = "--" + name.replace("_", "-")
                raise click.BadParameter("needs --warm-start-from STUDY", ctx=ctx, param_hint=f"'{flag}'")


def _check_cv(ctx: click.Context) -> None:
    if ctx.params["cv_folds"] == 1:
        raise click.BadParameter(
            "1 fold holds every window out at once and trains on none; expected 0 (the data's validation split) "
            "or K >= 2 folds",
            ctx=ctx,
            param_hint="'--cv'",
        )


def _check_epochs(ctx: click.Context) -> None:
    if ctx.params["min_epochs"] > ctx.params["epochs"]:
        raise click.BadParameter(
            f"{ctx.params['min_epochs']} is more than --epochs ({ctx.params['epochs']}); the pruner would never run",
            ctx=ctx,
            param_hint="'--min-epochs'",
        )


def _study_settings(ctx: click.Context) -> StudySettings:
    params = ctx.params
    return StudySettings(
        space=params["space"],
        study_name=params["study_name"] or params["space"],
        data_path=params["data"],
        storage_url=params["storage"],
        mlflow_uri=params["mlflow_uri"],
        trials=params["trials"],
        epochs=params["epochs"],
        objective=params["objective"],
        sampler=params["sampler"],
        pruner=params["pruner"],
        min_epochs=params["min_epochs"],
        seed=params["seed"],
        max_params=params["max_params"],
        heartbeat_interval_s=params["heartbeat_interval"],
        grace_period_s=params["grace_period"],
        cv_folds=params["cv_folds"],
        selection=params["selection"],
        selection_window=params["selection_window"],
        fs=params["fs"],
        objectives=params["objectives"],
        max_flops=params["max_flops"],
        max_latency_ms=params["max_latency_ms"],
        warm_start=_warm_start_settings(ctx),
        starting_points=params["starting_points"],
        artifact_dir=params["artifact_dir"],
        given=frozenset(name for name in STUDY_FIELDS if given(ctx, name)),
    )


def _warm_start_settings(ctx: click.Context) -> WarmStartSettings | None:
    params = ctx.params
    if params["warm_start_from"] is None:
        return None
    return WarmStartSettings(
        study_name=params["warm_start_from"],
        storage_url=params["warm_start_storage"] or params["storage"],
        top=params["warm_start_top"],
    )


def _report_mirror(prepared: PreparedStudy, study_name: str) -> None:
    uri = prepared.tracking_uri
    if uri is None:
        return
    if prepared.mirror_moved_from is not None:
        print_warning(
            f"the study was mirrored to {prepared.mirror_moved_from}; it is mirrored to {mask_secrets(uri)} from "
            "now on (pass that URI with its password as --mlflow-uri or $MLFLOW_TRACKING_URI to keep it; "
            "`ecgsearch mlflow-sync` brings any store up to date)"
        )
    if prepared.definition.mlflow_experiment_id is not None:
        out.print(f"MLflow: {mask_secrets(uri)} (experiment {prepared.definition.mlflow_experiment_id})")
    elif not prepared.mirror_reachable:
        print_warning(
            f"MLflow at {mask_secrets(uri)} is not reachable: trials run without a live mirror; once it is up, "
            f"run `ecgsearch mlflow-sync --study {study_name}`"
        )


def _print_outcome(study: optuna.Study) -> None:
    best = best_trial(study)
    if best is None:
        out.print("no completed trial yet.")
        return
    name = study.study_name
    out.print(f"best trial #{best.number} ({best.user_attrs.get('family', '?')}): value {quality_value(best):.4f}")
    exported = exported_instead_of_best(study)
    if exported is not None:
        out.print(f"retrain exports trial #{exported.trial.number}: {exported.reason}")
    out.print(
        f"next: ecgsearch status --study {name} · ecgsearch report --study {name} --out report.html · "
        f"ecgsearch retrain --study {name}"
    )
