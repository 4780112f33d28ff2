"""Retrain a study's best configuration from scratch over several seeds, evaluate once, export it.

A search trial is trained under a pruner, on a shortened budget, once: its value mixes the
architecture's quality with the luck of one initialisation. Retraining the exact stored config
with the full epoch budget and K seeds shows the spread (mean ± std on the test split). The seed
that is best on VALIDATION is exported, or with `ensemble` the mean of all K seeds' scores as one
model, so the test split never chooses anything. A cross-validated study exports its fold models by
default: one model per fold, trained on the other folds' patients for the epochs cross-validation
chose, scored as the mean of their scores (an ensemble bagged over patients); `refit` (or `ensemble`)
trains on all of its patients instead. Held-out patients chose that default (`bench/fold_ensemble.py`).

The steps: `plan_retrain` (study, trial and data, all checked before any training), then
`run_retrain` (train the seeds, pick the export, write the bundle, log it to MLflow). Nothing here
prints: progress goes to an optional callback, and the result says what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from optuna.trial import FrozenTrial

import ecgmodels
from search.data import DataError, ECGDataset, NormStats, all_labelled, fold_datasets, load_dataset
from search.errors import UsageError
from search.ship.bundle import write_bundle
from search.ship.choice import ExportChoice, best_on_validation, mean_ensemble
from search.ship.onnx import onnx_inputs
from search.ship.publish import MlflowOutcome, log_to_mlflow
from search.ship.seeds import ProgressCallback, SeedDiverged, SeedResult, summarise_seeds, train_seeds
from search.training.config import TrainConfig, split_config
from search.training.cost import COSTS, measure_cost
from search.training.device import resolve_device
from studies import (
    DEFAULT_SELECTION,
    DEFAULT_STORAGE_URL,
    SELECTIONS,
    StudyDefinition,
    StudyMismatch,
    load_study_with_definition,
    mask_secrets,
    open_storage,
    pick_trial,
    quality_value,
    read_folds,
    select_export,
    select_trial,
    trial_config,
    trial_objectives,
)


def default_patience(epochs: int) -> int:
    """Early-stopping patience on validation when none is given: a quarter of the budget, at least 3."""
    return max(3, epochs // 4)


@dataclass(frozen=True)
class RetrainSettings:
    """What to retrain and where the export goes (the command's flags, resolved)."""

    study: str
    storage: str | None = None  # None: the default storage
    trial_number: int | None = None  # None: chosen by `pick`, else by `select`
    # A rule on the objectives (`latency_ms<5`): the most accurate trial satisfying it (`studies.pick_trial`).
    pick: str | None = None
    # How the trial is chosen when neither `trial_number` nor `pick` names one (`studies.SELECTIONS`); None: the
    # default, `studies.DEFAULT_SELECTION`.
    select: str | None = None
    epochs: int | None = None  # None: the study's epoch budget
    seeds: int = 1
    ensemble: bool = False  # export the mean of the seeds' scores instead of the best seed
    # A cross-validated study exports the mean score of one model per fold (`seeds` per fold), each trained on
    # the other folds' patients, unless `refit` (or `ensemble`, a refit's seeds) asks for a fit on all of them.
    # `fold_ensemble` demands the fold models: refused on a study that has none.
    fold_ensemble: bool = False
    refit: bool = False
    patience: int | None = None  # None: default_patience(epochs)
    out: Path | None = None  # None: exports/<study>
    register_as: str | None = None
    mlflow_uri: str | None = None  # a URI, 'off', or None: the store the study was searched with
    data: Path | None = None  # None: the data path stored in the study
    device: str = "auto"

    def check(self) -> None:
        if self.pick is not None and self.trial_number is not None:
            raise UsageError("give --trial N or --pick RULE, not both")
        if self.select is not None and (self.pick is not None or self.trial_number is not None):
            raise UsageError("--select RULE chooses the trial: give it, --trial N or --pick RULE, not two of them")
        if self.select is not None and self.select not in SELECTIONS:
            raise UsageError(f"--select {self.select!r}: expected one of {', '.join(SELECTIONS)}")
        if self.seeds < 1:
            raise UsageError(f"--seeds {self.seeds}: expected an integer >= 1")
        if self.fold_ensemble and self.ensemble:
            raise UsageError(
                "give --ensemble (the mean of several seeds of a refit) or --fold-ensemble (the mean of the fold "
                "models, --seeds K per fold), not both"
            )
        if self.fold_ensemble and self.refit:
            raise UsageError(
                "give --refit (one model on every training patient) or --fold-ensemble (one model per fold), not both"
            )
        if self.ensemble and self.seeds < 2:
            raise UsageError(f"--ensemble averages several seeds: expected --seeds K with K >= 2, got {self.seeds}")
        if self.epochs is not None and self.epochs < 1:
            raise UsageError(f"--epochs {self.epochs}: expected an integer >= 1")
        if self.patience is not None and self.patience < 0:
            raise UsageError(f"--patience {self.patience}: expected an integer >= 0 (0 = no early stopping)")

    def exports_folds(self, cross_validated: bool) -> bool:
        """Whether the export is the fold models: a cross-validated study's default, unless a refit is asked for."""
        return cross_validated and not (self.refit or self.ensemble)


@dataclass
class RetrainPlan:
    """Everything loaded and checked before the first seed trains."""

    settings: RetrainSettings
    storage_url: str
    definition: StudyDefinition
    trial_number: int
    # How the trial was chosen, in a sentence: --trial, --pick, or the selection rule's reason.
    selection: str
    search_value: float
    # Every objective of the trial as the search measured it (`val_roc_auc`, `params`, `flops`, `latency_ms`).
    objectives: dict[str, float]
    config: dict[str, Any]  # the trial's flat config
    family: str
    model_params: dict[str, Any]
    train_cfg: TrainConfig  # with the retraining budget and patience
    data_path: str
    dataset: ECGDataset  # raw, for its meta and source
    normalised: ECGDataset  # what the seeds train on, normalised, on `device`
    norm: NormStats
    device: torch.device
    out: Path
    fs: float | None  # the sampling rate the study built its models for
    # A cross-validated study's trial is refit on all of train+val for the epochs its CV curve chose: the
    # CV estimate (`cv`) stands in for the validation metrics a final fit cannot have.
    cv: dict[str, Any] | None = None
    # When the fold models are exported: the study's fold of every train+val window (pooled order, as
    # `normalised` holds them).
    folds: list[int] | None = None


@dataclass
class RetrainResult:
    out: Path
    study: str
    trial_number: int
    family: str
    objective: str
    seeds: list[SeedResult]
    exported: ExportChoice
    diverged: list[SeedDiverged]
    test_summary: dict[str, dict[str, float | None]]
    mlflow: MlflowOutcome

    @property
    def record_relative(self) -> bool:
        """Whether the exported model takes each window's record RR (scoring needs patient ids)."""
        return ecgmodels.uses_record_rr(self.exported.models[0])


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


def _load_data(settings: RetrainSettings, definition: StudyDefinition) -> tuple[str, ECGDataset]:
    data_path = str(settings.data) if settings.data is not None else definition.data_path
    try:
        dataset = load_dataset(data_path)
    except DataError as error:
        if settings.data is not None:
            raise
        raise DataError(
            error.path,
            error.field,
            f"{error.message} (the data path stored in study {settings.study!r}; pass --data DIR if the data moved)",
        ) from None
    check_data(dataset, definition, data_path)
    return data_path, dataset


def plan_retrain(settings: RetrainSettings) -> RetrainPlan:
    """Load the study, the trial and the data, and check them, before anything trains or is written."""
    settings.check()
    storage_url = settings.storage or DEFAULT_STORAGE_URL
    study, definition = load_study_with_definition(open_storage(storage_url), settings.study)
    if settings.fold_ensemble and not definition.cv_folds:
        raise UsageError(
            f"--fold-ensemble: study {settings.study!r} is not cross-validated, so it has no fold models to train; "
            "use --ensemble (a study started with --cv K can export its fold models)"
        )
    if settings.pick is not None:
        trial = pick_trial(study, definition.metric_names(), settings.pick)
        selection = f"the most accurate trial satisfying --pick {settings.pick!r}"
    elif settings.trial_number is not None:
        trial, selection = select_trial(study, settings.trial_number), "--trial as asked"
    else:
        chosen = select_export(study, settings.select or DEFAULT_SELECTION)
        trial, selection = chosen.trial, f"--select {chosen.rule}: {chosen.reason}"
    config = trial_config(trial)
    # Refuses a config this code cannot build, before loading data.
    family, model_params, train_cfg = split_config(config)
    data_path, dataset = _load_data(settings, definition)
    if definition.cv_folds:
        train_cfg, training_data, cv = _final_fit(settings, definition, trial, train_cfg, dataset)
    else:
        epochs = settings.epochs or definition.epochs
        patience = default_patience(epochs) if settings.patience is None else settings.patience
        train_cfg, training_data, cv = replace(train_cfg, epochs=epochs, patience=patience), dataset, None
    normalised, norm = training_data.normalised()
    device = resolve_device(settings.device)
    return RetrainPlan(
        settings=settings,
        storage_url=storage_url,
        definition=definition,
        trial_number=trial.number,
        selection=selection,
        search_value=float(quality_value(trial)),
        objectives=trial_objectives(trial, definition.metric_names()),
        config=config,
        family=family,
        model_params=model_params,
        train_cfg=train_cfg,
        data_path=data_path,
        dataset=dataset,
        normalised=normalised.to(device),
        norm=norm,
        device=device,
        out=settings.out if settings.out is not None else Path("exports") / settings.study,
        fs=definition.fs if definition.fs is not None else dataset.fs,
        cv=cv,
        folds=read_folds(study) if settings.exports_folds(bool(definition.cv_folds)) else None,
    )


def _final_fit(
    settings: RetrainSettings, definition: StudyDefinition, trial: FrozenTrial, cfg: TrainConfig, data: ECGDataset
) -> tuple[TrainConfig, ECGDataset, dict[str, Any]]:
    """A cross-validated trial's refit: all of train+val, for the epochs its mean CV curve chose (or --epochs),
    keeping the last epoch (nothing is left to validate on, so there is no early stopping)."""
    if settings.patience:
        raise UsageError(
            f"--patience {settings.patience}: study {settings.study!r} is cross-validated, so retraining trains for "
            "the epochs cross-validation chose (--epochs E to change them), with no validation split to stop on"
        )
    epochs = settings.epochs or int(trial.user_attrs.get("cv_epoch") or definition.epochs)
    cv = {
        "folds": definition.cv_folds,
        "value": float(quality_value(trial)),
        "fold_values": trial.user_attrs.get("cv_fold_values"),
        "epochs": epochs,
        "selection": cfg.selection,
    }
    return replace(cfg, epochs=epochs, patience=0, selection="last"), all_labelled(data), cv


def run_retrain(plan: RetrainPlan, *, on_progress: ProgressCallback | None = None) -> RetrainResult:
    """Train the seeds, pick what to export, write the bundle to `plan.out` and log it to MLflow."""
    settings = plan.settings
    results, diverged = train_members(plan, on_progress)
    if not results:
        raise UsageError(
            f"trial {plan.trial_number}'s config diverged with every seed, nothing to export "
            f"({'; '.join(f'seed {d.seed}: {d.reason}' for d in diverged)}); retrain another trial with --trial N"
        )
    choice = pick_export(plan, results)
    summary = summarise_seeds(results)
    exported_config = {**plan.config, "epochs": plan.train_cfg.epochs, "patience": plan.train_cfg.patience}
    test = plan.normalised
    # The test windows' record RR when the model takes it (record-relative timing): the ONNX check's and
    # the MLflow example's second input, from every test window of each patient.
    test_rr = ecgmodels.record_rr_for(choice.models[0], test.X_test, test.groups_test)
    write_bundle(
        plan.out,
        models=choice.models,
        seeds=choice.seeds,
        folds=choice.folds,
        config={**exported_config, "seed": choice.seeds[0]},
        norm=plan.norm,
        threshold=choice.threshold,
        meta={**plan.dataset.meta, "fs": plan.fs} if plan.fs is not None else plan.dataset.meta,
        source=plan.dataset.source,
        metrics=bundle_metrics(plan, results, diverged, choice, summary),
        check_windows=test.X_test,
        check_record_rr=test_rr,
    )
    mlflow = log_to_mlflow(
        plan.out,
        given_uri=settings.mlflow_uri,
        definition=plan.definition,
        storage_url=plan.storage_url,
        study_name=settings.study,
        trial_number=plan.trial_number,
        register_as=settings.register_as,
        example=onnx_inputs(test.X_test[:2].cpu().numpy(), None if test_rr is None else test_rr[:2].cpu().numpy()),
    )
    return RetrainResult(
        out=plan.out,
        study=settings.study,
        trial_number=plan.trial_number,
        family=plan.family,
        objective=plan.train_cfg.objective,
        seeds=results,
        exported=choice,
        diverged=diverged,
        test_summary=summary,
        mlflow=mlflow,
    )


def train_members(
    plan: RetrainPlan, on_progress: ProgressCallback | None
) -> tuple[list[SeedResult], list[SeedDiverged]]:
    """The seeds of a refit, or of every fold model when the folds are exported: fold k trains on the other
    folds' windows and is validated on its own; its seeds follow fold k-1's, so every member has its own."""
    model = (plan.family, plan.model_params)
    common = {"seeds": plan.settings.seeds, "device": plan.device, "fs": plan.fs, "on_progress": on_progress}
    if plan.folds is None:
        return train_seeds(*model, plan.train_cfg, plan.normalised, **common)
    results: list[SeedResult] = []
    diverged: list[SeedDiverged] = []
    for fold, view in enumerate(fold_datasets(plan.normalised, plan.folds)):
        cfg = replace(plan.train_cfg, seed=plan.train_cfg.seed + fold * plan.settings.seeds)
        trained, failed = train_seeds(*model, cfg, view, fold=fold, **common)
        results += trained
        diverged += failed
    return results, diverged


def pick_export(plan: RetrainPlan, results: list[SeedResult]) -> ExportChoice:
    """The ensemble of the fold models or of the seeds when asked for, else the seed best on validation."""
    model = (plan.family, plan.model_params, plan.normalised)
    objective = plan.train_cfg.objective
    if plan.folds is not None or plan.settings.ensemble:
        return mean_ensemble(results, *model, objective=objective, device=plan.device, fs=plan.fs)
    return best_on_validation(results, *model, objective=objective, fs=plan.fs)


def retrain(settings: RetrainSettings, *, on_progress: ProgressCallback | None = None) -> RetrainResult:
    """Retrain the best (or the named) COMPLETE trial's config and write the export bundle."""
    return run_retrain(plan_retrain(settings), on_progress=on_progress)


def export_cost(plan: RetrainPlan, choice: ExportChoice) -> dict[str, Any]:
    """What running the exported model costs, measured as the search measured its trials (one window, batch 1).

    An ensemble runs each member once per window: its parameters and FLOPs are the members' sum, its latency
    the members' measured one after another.
    """
    data = plan.normalised
    costs = [
        measure_cost(model, family=plan.family, n_channels=data.n_channels, seq_len=data.seq_len, wanted=set(COSTS))
        for model in choice.models
    ]
    return {name: sum(cost.get(name) for cost in costs) for name in COSTS}


def bundle_metrics(
    plan: RetrainPlan,
    results: list[SeedResult],
    diverged: list[SeedDiverged],
    choice: ExportChoice,
    summary: dict[str, dict[str, float | None]],
) -> dict[str, Any]:
    """metrics.json: the exported model's metrics, every seed's, their spread, and where it all came from."""
    return {
        "study": plan.settings.study,
        "trial_number": plan.trial_number,
        "selection": plan.selection,
        "search_value": plan.search_value,
        "objectives": plan.definition.metric_names(),
        "search_objectives": plan.objectives,
        "cost": export_cost(plan, choice),
        "objective": plan.train_cfg.objective,
        "storage": mask_secrets(plan.storage_url),
        "data_path": plan.data_path,
        "data_fingerprint": plan.definition.data_fingerprint,
        "epochs": plan.train_cfg.epochs,
        "patience": plan.train_cfg.patience,
        "exported_seed": None if choice.ensemble else choice.seeds[0],
        "ensemble_seeds": choice.seeds if choice.ensemble else None,
        "ensemble_folds": choice.folds,
        "threshold": choice.threshold,
        "validation": choice.val_metrics,
        "cross_validation": plan.cv,
        "test": choice.test_metrics,
        "test_summary": summary,
        "seeds": [
            {
                "seed": r.seed,
                "fold": r.fold,
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
        "diverged": [f"seed {d.seed}: {d.reason}" for d in diverged],
    }
