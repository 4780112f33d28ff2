"""`ecgsearch retrain`: the best trial's config from scratch over several seeds, then the export bundle."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.text import Text

from search.cli.console import out, print_note, print_table, print_warning
from search.cli.options import example, mlflow_option, storage_option
from studies.selection import SELECTIONS

if TYPE_CHECKING:  # rich and the retrain machinery load when the command runs, not for `ecgsearch --help`
    from rich.console import Console
    from rich.progress import TaskID
    from rich.table import Table

    from search.ship.publish import MlflowOutcome
    from search.ship.retrain import RetrainPlan, RetrainResult
    from search.ship.seeds import RetrainEvent


@click.command(
    "retrain",
    short_help="retrain the best trial from scratch (several seeds) and export it",
    epilog=example(
        "ecgsearch retrain --study cnn_lstm --seeds 3 --out exports/cnn_lstm --register-as ecg-cnn-lstm",
        "ecgsearch retrain --study cnn-small --pick 'latency_ms<5' --out exports/cnn-small",
        "ecgsearch retrain --study cnn-cv --out exports/cnn-cv          # --cv K study: its K fold models, as one",
        "ecgsearch retrain --study cnn-cv --refit --seeds 3 --ensemble   # --cv K study: 3 seeds on every patient",
        "ecgsearch retrain --study cnn-cv --select best   # the best value, even where the folds do not confirm it",
    ),
)
@click.option("--study", "study_name", required=True, help="study name")
@storage_option
@click.option(
    "--trial",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="retrain trial number N instead of the best (it must be COMPLETE); any point of a Pareto front",
)
@click.option(
    "--pick",
    default=None,
    metavar="RULE",
    help="retrain the most accurate trial satisfying RULE, NAME<VALUE (<=, >, >= too; several joined by commas) "
    "on the study's objectives and measured costs, e.g. 'latency_ms<5' or 'params<=100000,flops<2e7'; a Pareto "
    "front point when one satisfies it",
)
@click.option(
    "--select",
    type=click.Choice(SELECTIONS),
    default=None,
    help="how the trial is chosen when --trial and --pick are not given: 'confirmed' (the default: a --cv study's "
    "recommended starting point, unless the best trial's per-fold lead over it passes a one-sided paired t-test at "
    "p < 0.05, since a best value found among many trials on few patients is partly luck; the best trial where "
    "there are no folds or starting points) or 'best' (the best value)",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, metavar="E", help="epoch budget (default: the study's)"
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="K",
    help="train K times with seeds config.seed .. config.seed+K-1 and export the best on validation; for a --cv "
    "study's fold models, K per fold, all exported",
)
@click.option(
    "--ensemble",
    is_flag=True,
    help="export the mean of the K seeds' scores as one model (one ONNX graph) instead of the best seed; "
    "needs --seeds K >= 2; the seeds of a refit, so under --cv it implies --refit",
)
@click.option(
    "--fold-ensemble",
    is_flag=True,
    help="what a cross-validated study (start --cv K) exports by default: one model per fold, trained on the other "
    "folds' patients for the epochs cross-validation chose (--seeds S: S per fold), as one mean-score model; each "
    "member reports its held-out fold as validation. The flag refuses a study that is not cross-validated",
)
@click.option(
    "--refit",
    is_flag=True,
    help="cross-validated studies: train on every training patient (train+val) for the epochs cross-validation "
    "chose, instead of exporting the fold models; costs 1/(K-1) of their training time per seed",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=None,
    metavar="P",
    help="early stopping on validation after P epochs without improvement, 0 = off (default: max(3, epochs // 4))",
)
@click.option("--out", "out_dir", default=None, metavar="DIR", help="bundle folder (default: exports/<study>)")
@click.option(
    "--register-as", default=None, metavar="NAME", help="register the exported model in the MLflow model registry"
)
@mlflow_option
@click.option(
    "--data",
    default=None,
    metavar="DIR",
    help="data folder or .npz (default: the path stored in the study); its fingerprint must match the study's",
)
@click.option(
    "--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True, help="training device"
)
def command(
    study_name: str,
    storage: str,
    trial: int | None,
    pick: str | None,
    select: str | None,
    epochs: int | None,
    seeds: int,
    ensemble: bool,
    fold_ensemble: bool,
    refit: bool,
    patience: int | None,
    out_dir: str | None,
    register_as: str | None,
    mlflow_uri: str | None,
    data: str | None,
    device: str,
) -> int:
    """Takes a COMPLETE trial of a study (under --cv: its recommended starting point unless the best trial's lead over
    it is confirmed across the folds; else the best; or the one --select, --pick or --trial names), rebuilds its
    exact config, trains it from scratch on the study's data with the full epoch budget and early stopping on
    validation, once per seed, and evaluates each seed once on the test split (mean ± std across seeds). The seed
    best on validation (with --ensemble: the mean of all seeds' scores, as one model) is exported to --out: model.pt
    (state_dict), model.onnx (with the score head), config.json, metrics.json and README.md, and logged to MLflow
    under the study's run. A study searched with --cv K exports its K fold models' mean score: each trained on the
    other folds' patients for the epochs its cross-validation chose, which transferred better to held-out patients
    than a refit did; --refit trains on all of train+val for those epochs instead.
    """
    from search.ship.retrain import RetrainSettings, plan_retrain, run_retrain

    settings = RetrainSettings(
        study=study_name,
        storage=storage,
        trial_number=trial,
        pick=pick,
        select=select,
        epochs=epochs,
        seeds=seeds,
        ensemble=ensemble,
        fold_ensemble=fold_ensemble,
        refit=refit,
        patience=patience,
        out=Path(out_dir) if out_dir is not None else None,
        register_as=register_as,
        mlflow_uri=mlflow_uri,
        data=Path(data) if data is not None else None,
        device=device,
    )
    plan = plan_retrain(settings)
    out.print(describe_plan(plan))
    with SeedProgress(out, plan.train_cfg.objective) as progress:
        result = run_retrain(plan, on_progress=progress.on_event)
    for diverged in result.diverged:
        print_warning(f"seed {diverged.seed}: {diverged.reason}")
    print_table(seed_table(result))
    out.print(describe_result(result))
    if result.record_relative:
        print_note(
            "the model uses record-relative timing: scoring needs the patient of each window "
            f"(ecgsearch predict --model {result.out} --input FILE --groups FILE)"
        )
    return 0


# ---- display: orchestration returns results and events; the command shows them -----------------------

# Metrics shown in the seed table (all scalar metrics are in metrics.json).
TABLE_METRICS = ("roc_auc", "pr_auc", "f1_macro", "f1_1", "precision_macro", "recall_macro", "accuracy")


class SeedProgress:
    """One rich progress bar per seed, fed by `search.ship.seeds` events."""

    def __init__(self, console: Console, objective: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.objective = objective
        self._tasks: dict[int, TaskID] = {}
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )

    def __enter__(self) -> SeedProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def on_event(self, event: RetrainEvent) -> None:
        from search.ship.seeds import EpochDone, SeedDiverged, SeedFinished, SeedStarted

        if isinstance(event, SeedStarted):
            self._tasks[event.seed] = self._progress.add_task(f"seed {event.seed}", total=event.epochs, status="")
            return
        task = self._tasks[event.seed]
        if isinstance(event, EpochDone):
            value = _value(event.metrics.get(f"val_{self.objective}"))
            status = f"epoch {event.epoch}: loss {event.metrics['train_loss']:.4f} val {self.objective} {value}"
            self._progress.update(task, completed=event.epoch, status=status)
        elif isinstance(event, SeedFinished):
            status = f"best epoch {event.best_epoch} · val {self.objective} {_value(event.val_value)}"
            total = self._progress.tasks[task].total
            self._progress.update(
                task, completed=total, status=status + (" · stopped early" if event.stopped_early else "")
            )
        elif isinstance(event, SeedDiverged):
            self._progress.update(task, status=Text("diverged", style="red"))


def describe_plan(plan: RetrainPlan) -> Text:
    cfg, settings = plan.train_cfg, plan.settings
    ensemble = ", exporting their ensemble (mean score)" if settings.ensemble or plan.folds is not None else ""
    seeds = f"{settings.seeds} seed(s) from {cfg.seed}"
    if plan.cv is not None and plan.folds is not None:
        how = (
            f"once per fold of its {plan.cv['folds']}-fold cross-validation, on the other folds' patients, for the "
            f"{cfg.epochs} epochs it chose (CV {cfg.objective} {plan.cv['value']:.4f})"
        )
        seeds = f"{settings.seeds} seed(s) per fold"
    elif plan.cv is not None:
        how = (
            f"on all of train+val for the {cfg.epochs} epochs its {plan.cv['folds']}-fold cross-validation chose "
            f"(CV {cfg.objective} {plan.cv['value']:.4f})"
        )
    else:
        how = f"{cfg.epochs} epochs, patience {cfg.patience} on validation {cfg.objective}"
    return Text.assemble(
        "retraining trial ",
        (str(plan.trial_number), "bold"),
        " of study ",
        (settings.study, "bold"),
        f" ({plan.family}, search value {plan.search_value:.4f}) from scratch {how}, {seeds}{ensemble}, "
        f"on {plan.device}",
        f"\nchosen by {plan.selection}",
    )


def seed_table(result: RetrainResult) -> Table:
    """Metrics as rows, seeds as columns (plus mean ± std, and the ensemble when exported), so it fits a
    terminal for a handful of seeds."""
    from rich.table import Table

    ensemble = result.exported.ensemble
    exported = set(result.exported.seeds)
    table = Table(
        title=f"trial {result.trial_number}'s config ({result.family}) retrained: test metrics per seed",
        caption="ensemble: the mean of the seeds' scores, exported" if ensemble else "* exported (best on validation)",
    )
    table.add_column("metric")
    for seed in result.seeds:
        marked = not ensemble and seed.seed in exported
        fold = f"fold {seed.fold + 1} · " if seed.fold is not None else ""
        table.add_column(f"{fold}seed {seed.seed}" + (" *" if marked else ""), justify="right")
    several = len(result.seeds) > 1
    if several:
        table.add_column("mean ± std", justify="right", style="bold")
    if ensemble:
        table.add_column("ensemble", justify="right", style="bold")
    blank_summary = [""] if several else []
    table.add_row("best epoch", *(str(s.best_epoch) for s in result.seeds), *blank_summary, *([""] if ensemble else []))
    objective = result.objective
    table.add_row(
        f"val {objective}",
        *(_value(s.val_metrics.get(objective)) for s in result.seeds),
        *blank_summary,
        *([_value(result.exported.val_metrics.get(objective))] if ensemble else []),
        end_section=True,
    )
    for name in TABLE_METRICS:
        cells = [f"{s.test_metrics[name]:.4f}" for s in result.seeds]
        if several:
            stats = result.test_summary[name]
            cells.append(f"{stats['mean']:.4f} ± {stats['std']:.4f}")
        if ensemble:
            cells.append(f"{result.exported.test_metrics[name]:.4f}")
        table.add_row(f"test {name}", *cells)
    return table


def describe_result(result: RetrainResult) -> Text:
    if result.exported.ensemble:
        what = f"the ensemble of seeds {', '.join(str(s) for s in result.exported.seeds)}"
    else:
        what = f"seed {result.exported.seeds[0]}"
    return Text.assemble(
        f"exported {what} to ", (str(result.out), "bold"), f"; {describe_mlflow(result.mlflow, result.out)}"
    )


def describe_mlflow(outcome: MlflowOutcome, out: Path) -> str:
    if outcome.uri is None:
        note = "MLflow off: the bundle was not logged to MLflow"
        return note + (f" and --register-as {outcome.register_as} was ignored" if outcome.register_as else "")
    if outcome.run is None:
        return (
            f"MLflow at {outcome.uri} could not take the model ({outcome.error or ''}); the bundle in {out} is complete"
        )
    note = f"logged to MLflow {outcome.uri} run {outcome.run.run_id}"
    if outcome.register_as:
        note += f", registered as {outcome.register_as} version {outcome.run.registered_version}"
    return note


def _value(value: float | None) -> str:
    """A metric for the table; a final fit on all of train+val has no validation value."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"
