"""`ecgsearch start`: create the study (or resume it) and work on it here."""

from __future__ import annotations

import argparse
from pathlib import Path

import spaces
from search.cli.options import add_command, add_mlflow_flag, add_storage_flag, mlflow_flag_value
from search.cli.run_workers import add_worker_flags, console, describe_study, run_study_workers
from search.errors import UsageError

DEFAULT_TRIALS = 20


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "start",
        help="create or resume a study and run its trials here",
        description="Create a study (or resume the one of that name) in the study database and run trials "
        "on it in this machine's worker processes until the study's trial budget is spent.\n"
        "Running it again with a larger --trials adds trials to the same study.",
        example="ecgsearch start --space cnn_lstm --data data/mitdb --trials 50 --epochs 20",
    )
    parser.add_argument("--space", required=True, help=f"search space: one of {', '.join(spaces.names())}")
    parser.add_argument("--study", default=None, help="study name (default: the space name)")
    parser.add_argument("--data", default="data/mitdb", help="dataset folder (X_train.pt … y_test.pt) or .npz file")
    add_storage_flag(parser)
    add_mlflow_flag(parser)
    parser.add_argument(
        "--trials",
        type=int,
        default=None,
        metavar="N",
        help="budget for the whole study across all workers: COMPLETE + PRUNED trials "
        f"(default: the stored budget, {DEFAULT_TRIALS} for a new study)",
    )
    parser.add_argument("--epochs", type=int, default=10, metavar="E", help="epoch budget per trial")
    parser.add_argument(
        "--objective",
        default=None,
        help="validation metric to maximise (default: the stored one, roc_auc for a new study)",
    )
    parser.add_argument("--sampler", default="tpe", help="tpe | random | gp")
    parser.add_argument("--pruner", default="hyperband", help="hyperband | median | sha | none")
    parser.add_argument(
        "--min-epochs", type=int, default=1, metavar="E", help="the pruner never stops a trial before this many epochs"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler and of each trial's training")
    parser.add_argument(
        "--max-params",
        type=int,
        default=2_000_000,
        metavar="N",
        help="architectures with more trainable parameters are rejected before training",
    )
    parser.add_argument(
        "--create-only", action="store_true", help="create (or check) the study and its MLflow experiment, run no trial"
    )
    add_worker_flags(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from search.data import load_dataset
    from search.optimize.worker import current_versions
    from search.tracking import resolve_tracking_uri, same_store
    from search.training.metrics import OBJECTIVES
    from studies import (
        StudyDefinition,
        StudyNotFound,
        budget_of,
        create_or_load_study,
        load_study_with_definition,
        make_pruner,
        make_sampler,
        mask_secrets,
        open_storage,
        resolve_storage_url,
        write_definition,
    )

    # Every name is checked before anything is created or trained.
    spaces.get(args.space)
    make_sampler(args.sampler, seed=args.seed)
    make_pruner(args.pruner, min_epochs=args.min_epochs, max_epochs=args.epochs)
    if args.objective is not None and args.objective not in OBJECTIVES:
        raise UsageError(f"--objective {args.objective!r} is not known; expected one of {', '.join(OBJECTIVES)}")
    for flag, value in (("--epochs", args.epochs), ("--trials", args.trials), ("--max-params", args.max_params)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be a positive integer, got {value}")
    if not 1 <= args.min_epochs <= args.epochs:
        raise UsageError(f"--min-epochs must be between 1 and --epochs ({args.epochs}), got {args.min_epochs}")

    study_name = args.study or args.space
    storage_url = resolve_storage_url(args.storage)
    dataset = load_dataset(args.data)
    storage = open_storage(storage_url, heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period)
    if args.objective is None:
        # Resuming without --objective keeps the stored one rather than refusing over a default.
        try:
            args.objective = load_study_with_definition(storage, study_name)[1].objective
        except StudyNotFound:
            args.objective = "roc_auc"
    versions = current_versions()
    given = StudyDefinition(
        space=args.space,
        data_path=str(Path(args.data).resolve()),
        data_fingerprint=dataset.fingerprint(),
        n_channels=dataset.n_channels,
        seq_len=dataset.seq_len,
        objective=args.objective,
        direction=OBJECTIVES[args.objective],
        epochs=args.epochs,
        sampler=args.sampler,
        pruner=args.pruner,
        seed=args.seed,
        max_params=args.max_params,
        trials_budget=args.trials or DEFAULT_TRIALS,
        ecgsearch_version=versions["ecgsearch"],
        optuna_version=versions["optuna"],
        torch_version=torch.__version__,
        min_epochs=args.min_epochs,
    )
    study, definition, created = create_or_load_study(storage, study_name, given)
    tracking_uri = resolve_tracking_uri(mlflow_flag_value(args), storage_url, definition.mlflow_tracking_uri)
    # A resumed study keeps its experiment, unless it is now mirrored to another store: set one up there.
    if tracking_uri and not (
        definition.mlflow_parent_run_id and same_store(tracking_uri, definition.mlflow_tracking_uri)
    ):
        if definition.mlflow_tracking_uri and not same_store(tracking_uri, definition.mlflow_tracking_uri):
            console.print(
                f"[yellow]warning:[/yellow] the study was mirrored to {definition.mlflow_tracking_uri}; it is "
                f"mirrored to {mask_secrets(tracking_uri)} from now on (pass that URI with its password as "
                "--mlflow-uri or $MLFLOW_TRACKING_URI to keep it; `ecgsearch mlflow-sync` brings any store up to date)"
            )
        _set_up_mirror(
            definition, tracking_uri=tracking_uri, study_name=study_name, storage_url=storage_url, created=created
        )
    if not created:
        _warn_about_ignored_settings(args, definition)
    if args.trials is not None:
        definition.trials_budget = args.trials
    write_definition(study, definition)
    budget = budget_of(study)
    console.print(
        ("created " if created else "resuming ") + describe_study(study_name, definition, storage_url, budget)
    )
    if tracking_uri:
        console.print(f"MLflow: {mask_secrets(tracking_uri)} (experiment {definition.mlflow_experiment_id})")
    if args.create_only:
        return 0
    code = run_study_workers(
        args,
        study_name=study_name,
        storage_url=storage_url,
        mlflow_uri=tracking_uri,
        data_dir=args.data,
        storage=storage,
    )
    _print_outcome(study, study_name)
    return code


def _print_outcome(study, study_name: str) -> None:
    import optuna

    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        console.print("no completed trial yet.")
        return
    best = study.best_trial
    console.print(f"best trial #{best.number} ({best.user_attrs.get('family', '?')}): value {best.value:.4f}")
    console.print(
        f"next: ecgsearch status --study {study_name} · ecgsearch report --study {study_name} "
        f"--out report.html · ecgsearch retrain --study {study_name}"
    )


def _set_up_mirror(definition, *, tracking_uri: str, study_name: str, storage_url: str, created: bool) -> None:
    """Create the study's MLflow experiment and parent run once; a store that is down only warns.

    Workers then mirror nothing live, and `ecgsearch mlflow-sync` rebuilds the MLflow side from the study
    database once the store is back (MLflow mirrors, it never decides).
    """
    from search.tracking import definition_tags, setup_study_mirror
    from search.tracking.client import limit_http_retries
    from search.tracking.uri import http_reachable, is_http
    from studies import mask_secrets

    # Stored masked: the study database is readable by every worker and the dashboard.
    definition.mlflow_tracking_uri = mask_secrets(tracking_uri)
    definition.mlflow_experiment_id = definition.mlflow_parent_run_id = None  # ids of this store, or none
    if is_http(tracking_uri):
        limit_http_retries(5.0)
        if not http_reachable(tracking_uri, timeout_s=3.0):
            console.print(
                f"[yellow]warning:[/yellow] MLflow at {mask_secrets(tracking_uri)} is not reachable: trials run "
                f"without a live mirror; once it is up, run `ecgsearch mlflow-sync --study {study_name}`"
            )
            return
    experiment_id, parent_run_id = setup_study_mirror(
        tracking_uri=tracking_uri,
        study_name=study_name,
        tags=definition_tags(study_name=study_name, definition=definition, storage_url=storage_url),
        new_study=created,
    )
    definition.mlflow_experiment_id = experiment_id
    definition.mlflow_parent_run_id = parent_run_id


def _warn_about_ignored_settings(args: argparse.Namespace, stored) -> None:
    """A resumed study keeps its stored settings (workers must agree on them); say so when they differ."""
    ignored = [
        f"{flag} {given} (the study keeps {kept})"
        for flag, given, kept in (
            ("--epochs", args.epochs, stored.epochs),
            ("--sampler", args.sampler, stored.sampler),
            ("--pruner", args.pruner, stored.pruner),
            ("--max-params", args.max_params, stored.max_params),
        )
        if given != kept
    ]
    if ignored:
        console.print("[yellow]warning:[/yellow] resuming keeps the study's settings; ignored: " + ", ".join(ignored))
