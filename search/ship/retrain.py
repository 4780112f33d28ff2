"""Retrain a study's best configuration from scratch over several seeds, evaluate once, export it.

A search trial is trained under a pruner, on a shortened budget, once: its value mixes the
architecture's quality with the luck of one initialisation. Retraining the exact stored config
with the full epoch budget and K seeds shows the spread (mean ± std on the test split), and the
seed that is best on VALIDATION is exported, so the test split never chooses anything.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import ecgmodels
from search.data import DataError, ECGDataset, load_dataset
from search.errors import UsageError
from search.ship.bundle import MlflowLogResult, log_bundle_to_mlflow, write_bundle
from search.training.config import split_config
from search.training.loop import TrainingDiverged, fit, resolve_device, seed_everything
from search.training.metrics import classification_metrics, scalar_metrics
from search.training.scoring import score_windows
from studies import (
    StudyDefinition,
    StudyMismatch,
    load_study_with_definition,
    mask_secrets,
    open_storage,
    resolve_storage_url,
    select_trial,
    trial_config,
)

# Metrics shown in the seed table (all scalar metrics go to metrics.json).
TABLE_METRICS = ("roc_auc", "pr_auc", "f1_macro", "f1_1", "precision_macro", "recall_macro", "accuracy")


def default_patience(epochs: int) -> int:
    """Early-stopping patience on validation when none is given: a quarter of the budget, at least 3."""
    return max(3, epochs // 4)


@dataclass
class SeedResult:
    seed: int
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    threshold: float
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    seconds: float
    state: dict[str, torch.Tensor] = field(repr=False)


@dataclass
class RetrainResult:
    out: Path
    study: str
    trial_number: int
    family: str
    objective: str
    seeds: list[SeedResult]
    exported: SeedResult
    diverged: list[str]  # "seed S: reason" for seeds whose training diverged
    test_summary: dict[str, dict[str, float | None]]
    mlflow: MlflowLogResult | None
    mlflow_note: str


def check_data(dataset: ECGDataset, definition: StudyDefinition, data_path: str) -> None:
    fingerprint = dataset.fingerprint()
    if fingerprint != definition.data_fingerprint:
        difference = f"data_fingerprint: study {definition.data_fingerprint[:12]}… vs {data_path} {fingerprint[:12]}…"
        raise StudyMismatch(
            f"the data in {data_path} differs from the data the study was searched on "
            f"({definition.data_path}): {difference}. Retrain on the study's data (--data), or the "
            "best configuration would be judged on data it was not chosen for.",
            [difference],
        )


def summarise_seeds(results: list[SeedResult]) -> dict[str, dict[str, float | None]]:
    """Mean and sample standard deviation of every scalar test metric across seeds (std None for one)."""
    names = scalar_metrics(results[0].test_metrics).keys()
    summary: dict[str, dict[str, float | None]] = {}
    for name in names:
        values = np.array([float(r.test_metrics[name]) for r in results], dtype=np.float64)
        summary[name] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else None,
        }
    return summary


def final_metrics(
    model: torch.nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    autoencoder: bool,
    threshold: float,
    device: torch.device,
) -> dict[str, Any]:
    """The full metric set in float32 without autocast: the numbers the exported model reproduces."""
    scores = score_windows(model, X, autoencoder=autoencoder, device=device)
    return classification_metrics(y.cpu(), scores, threshold)


def _objective_key(value: Any) -> float:
    value = float(value)
    return -math.inf if math.isnan(value) else value


def train_seeds(
    config: dict[str, Any],
    data: ECGDataset,
    *,
    epochs: int,
    patience: int,
    seeds: int,
    device: torch.device,
    console: Console,
) -> tuple[list[SeedResult], list[str]]:
    """Train `config` from scratch once per seed on normalised `data` (already on `device`)."""
    family, model_params, train_cfg = split_config(config)
    autoencoder = ecgmodels.is_autoencoder(family)
    results: list[SeedResult] = []
    diverged: list[str] = []
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with progress:
        for index in range(seeds):
            seed = train_cfg.seed + index
            cfg = replace(train_cfg, epochs=epochs, patience=patience, seed=seed)
            task = progress.add_task(f"seed {seed}", total=epochs, status="")

            def on_epoch(epoch: int, metrics: dict[str, float], task=task, objective=cfg.objective) -> None:
                progress.update(
                    task,
                    completed=epoch,
                    status=f"epoch {epoch}: loss {metrics['train_loss']:.4f} "
                    f"val {objective} {metrics.get('val_' + objective, math.nan):.4f}",
                )

            seed_everything(seed)  # the initial weights come from the seed, not from the previous run
            model = ecgmodels.build(family, n_channels=data.n_channels, seq_len=data.seq_len, **model_params)
            started = time.perf_counter()
            try:
                fitted = fit(model, data, cfg, autoencoder=autoencoder, device=device, on_epoch=on_epoch)
            except TrainingDiverged as error:
                diverged.append(f"seed {seed}: {error}")
                progress.update(task, status="[red]diverged[/red]")
                continue
            common = {"autoencoder": autoencoder, "threshold": fitted.threshold, "device": device}
            val_metrics = final_metrics(model, data.X_val, data.y_val, **common)
            test_metrics = final_metrics(model, data.X_test, data.y_test, **common)
            seconds = time.perf_counter() - started
            progress.update(
                task,
                completed=epochs,
                status=f"best epoch {fitted.best_epoch} · val {cfg.objective} {val_metrics[cfg.objective]:.4f}"
                + (" · stopped early" if fitted.stopped_early else ""),
            )
            results.append(
                SeedResult(
                    seed=seed,
                    best_epoch=fitted.best_epoch,
                    epochs_run=len(fitted.history),
                    stopped_early=fitted.stopped_early,
                    threshold=float(fitted.threshold),
                    val_metrics=val_metrics,
                    test_metrics=test_metrics,
                    seconds=seconds,
                    state=fitted.best_state,
                )
            )
    return results, diverged


def seed_table(result: RetrainResult) -> Table:
    """Metrics as rows, seeds as columns (plus mean ± std), so it fits a terminal for a handful of seeds."""
    table = Table(
        title=f"trial {result.trial_number}'s config ({result.family}) retrained: test metrics per seed",
        caption="* exported (best on validation)",
    )
    table.add_column("metric")
    for seed in result.seeds:
        table.add_column(f"seed {seed.seed}" + (" *" if seed is result.exported else ""), justify="right")
    several = len(result.seeds) > 1
    if several:
        table.add_column("mean ± std", justify="right", style="bold")
    table.add_row("best epoch", *(str(s.best_epoch) for s in result.seeds), *([""] if several else []))
    table.add_row(
        f"val {result.objective}",
        *(f"{s.val_metrics[result.objective]:.4f}" for s in result.seeds),
        *([""] if several else []),
        end_section=True,
    )
    for name in TABLE_METRICS:
        cells = [f"{s.test_metrics[name]:.4f}" for s in result.seeds]
        if several:
            stats = result.test_summary[name]
            cells.append(f"{stats['mean']:.4f} ± {stats['std']:.4f}")
        table.add_row(f"test {name}", *cells)
    return table


def retrain(
    study_name: str,
    *,
    storage: str | None = None,
    trial_number: int | None = None,
    epochs: int | None = None,
    seeds: int = 1,
    patience: int | None = None,
    out: str | Path | None = None,
    register_as: str | None = None,
    mlflow_uri: str | None = None,
    data: str | Path | None = None,
    device: str = "auto",
    console: Console | None = None,
) -> RetrainResult:
    """Retrain the best (or the named) COMPLETE trial's config and write the export bundle to `out`."""
    console = console or Console(highlight=False)
    if seeds < 1:
        raise UsageError(f"--seeds {seeds}: expected an integer >= 1")
    if epochs is not None and epochs < 1:
        raise UsageError(f"--epochs {epochs}: expected an integer >= 1")
    if patience is not None and patience < 0:
        raise UsageError(f"--patience {patience}: expected an integer >= 0 (0 = no early stopping)")

    storage_url = resolve_storage_url(storage)
    study, definition = load_study_with_definition(open_storage(storage_url), study_name)
    trial = select_trial(study, trial_number)
    config = trial_config(trial)
    family, model_params, train_cfg = split_config(
        config
    )  # refuses a config this code cannot build, before loading data

    data_path = str(data) if data is not None else definition.data_path
    try:
        dataset = load_dataset(data_path)
    except DataError as error:
        if data is not None:
            raise
        raise DataError(
            error.path,
            error.field,
            f"{error.message} (the data path stored in study {study_name!r}; pass --data DIR if the data moved)",
        ) from None
    check_data(dataset, definition, data_path)
    normalised, norm = dataset.normalised()
    torch_device = resolve_device(device)
    on_device = normalised.to(torch_device)

    budget = epochs or definition.epochs
    patience = default_patience(budget) if patience is None else patience
    out_dir = Path(out) if out is not None else Path("exports") / study_name
    console.print(
        f"retraining trial [bold]{trial.number}[/bold] of study [bold]{study_name}[/bold] "
        f"({family}, search value {trial.value:.4f}) from scratch: {budget} epochs, patience {patience} "
        f"on validation {train_cfg.objective}, {seeds} seed(s) from {train_cfg.seed}, on {torch_device}"
    )
    results, diverged = train_seeds(
        config, on_device, epochs=budget, patience=patience, seeds=seeds, device=torch_device, console=console
    )
    for line in diverged:
        console.print(f"[yellow]warning:[/yellow] {line}")
    if not results:
        raise UsageError(
            f"trial {trial.number}'s config diverged with every seed, nothing to export "
            f"({'; '.join(diverged)}); retrain another trial with --trial N"
        )
    exported = max(results, key=lambda r: _objective_key(r.val_metrics[train_cfg.objective]))
    summary = summarise_seeds(results)

    model = ecgmodels.build(family, n_channels=dataset.n_channels, seq_len=dataset.seq_len, **model_params)
    model.load_state_dict(exported.state)
    exported_config = {**config, "epochs": budget, "patience": patience, "seed": exported.seed}
    metrics = {
        "study": study_name,
        "trial_number": trial.number,
        "search_value": trial.value,
        "objective": train_cfg.objective,
        "storage": mask_secrets(storage_url),
        "data_path": data_path,
        "data_fingerprint": definition.data_fingerprint,
        "epochs": budget,
        "patience": patience,
        "exported_seed": exported.seed,
        "threshold": exported.threshold,
        "validation": exported.val_metrics,
        "test": exported.test_metrics,
        "test_summary": summary,
        "seeds": [
            {
                "seed": r.seed,
                "best_epoch": r.best_epoch,
                "epochs_run": r.epochs_run,
                "stopped_early": r.stopped_early,
                "threshold": r.threshold,
                "seconds": round(r.seconds, 3),
                "validation": r.val_metrics,
                "test": r.test_metrics,
            }
            for r in results
        ],
        "diverged": diverged,
    }
    write_bundle(
        out_dir,
        model=model,
        config=exported_config,
        norm=norm,
        threshold=exported.threshold,
        meta=dataset.meta,
        source=dataset.source,
        metrics=metrics,
        check_windows=normalised.X_test,
    )

    from search.tracking import resolve_tracking_uri, same_store
    from search.tracking.client import describe_error

    tracking_uri = resolve_tracking_uri(mlflow_uri, storage_url, definition.mlflow_tracking_uri)
    mlflow_result: MlflowLogResult | None = None
    if tracking_uri is None:
        mlflow_note = "MLflow off: the bundle was not logged to MLflow"
        if register_as:
            mlflow_note += f" and --register-as {register_as} was ignored"
    else:
        known = same_store(tracking_uri, definition.mlflow_tracking_uri)
        try:
            mlflow_result = log_bundle_to_mlflow(
                out_dir,
                tracking_uri=tracking_uri,
                experiment_id=definition.mlflow_experiment_id if known else None,
                study_name=study_name,
                parent_run_id=definition.mlflow_parent_run_id if known else None,
                run_name=f"retrain-trial-{trial.number}",
                example=normalised.X_test[:2].cpu().numpy(),
                register_as=register_as,
            )
        except Exception as error:  # MLflow mirrors, never decides: the bundle on disk is complete
            mlflow_note = (
                f"MLflow at {mask_secrets(tracking_uri)} could not take the model "
                f"({describe_error(error, tracking_uri).splitlines()[0]}); "
                f"the bundle in {out_dir} is complete"
            )
        else:
            mlflow_note = f"logged to MLflow {mask_secrets(tracking_uri)} run {mlflow_result.run_id}" + (
                f", registered as {register_as} version {mlflow_result.registered_version}" if register_as else ""
            )

    result = RetrainResult(
        out=out_dir,
        study=study_name,
        trial_number=trial.number,
        family=family,
        objective=train_cfg.objective,
        seeds=results,
        exported=exported,
        diverged=diverged,
        test_summary=summary,
        mlflow=mlflow_result,
        mlflow_note=mlflow_note,
    )
    console.print(seed_table(result))
    console.print(f"exported seed {exported.seed} to [bold]{out_dir}[/bold]; {mlflow_note}")
    return result
