"""Patients neither saw: the CV fold models' ensemble against a refit's seeds, by nested patient-grouped CV.

After `start --cv K` chose a configuration and its epochs, `retrain` can export (i) a refit on every
training patient, one seed or the mean of several seeds' scores (`--refit`, `--seeds S --ensemble`), or
(ii) the K fold models, each trained on the other folds' patients for the same epochs, as one mean-score
model: a patient-bagged ensemble (the default of a `--cv` study, chosen on this bench's measurements).
Which transfers better to new patients cannot be read off the search's own CV figure, since the fold
models are what produced it. This bench measures it the way a user's test split would, on the
training data alone: outer patient-grouped folds hold patients out; on the rest, inner folds pick the
epochs (the mean CV curve under the study's selection rule, as a `--cv` trial does), then both exports
are built and scored once on the held-out patients. Both cuts are
reported for the fold ensemble: the one rule (chosen on training windows) and the cut chosen on the
fold models' out-of-fold scores (patients each member did not train on).

The model is the second starting point of every classifier search (the `cnn` defaults with the rhythm
branch, `average` fusion, record-relative where the data has patient ids): fixed, chosen by no one here.

    python bench/fold_ensemble.py                   # MIT-BIH DS1 train+val: 5 outer x 4 inner folds, 8 epochs
    python bench/fold_ensemble.py --fold-seed 1     # another draw of the outer and inner folds
    python bench/fold_ensemble.py --data DIR        # any six-file dataset with patient ids
    python bench/fold_ensemble.py --quick           # a tiny slice (CI)
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path

OUTER, INNER, EPOCHS, SEEDS = 5, 4, 8, 3


def model_params(dataset: Any) -> dict[str, Any]:
    return _common.rhythm_starting_point(relative=dataset.has_groups)


def design_and_held_out(outer: Any) -> Any:
    """The outer fold as a dataset: train = its training patients, no validation, test = its held-out patients."""
    from search.data import ECGDataset

    groups = outer.has_groups
    return ECGDataset(
        X_train=outer.X_train, y_train=outer.y_train, X_val=outer.X_train[:0], y_val=outer.y_train[:0],
        X_test=outer.X_val, y_test=outer.y_val, source=f"{outer.source} (outer)", meta=outer.meta,
        groups_train=outer.groups_train if groups else None, groups_val=outer.groups_train[:0] if groups else None,
        groups_test=outer.groups_val if groups else None,
    )  # fmt: skip


def member_scores(models: list[Any], X: Any, groups: Any) -> list[Any]:
    from search.training.scoring import score_windows

    return [score_windows(model, X, autoencoder=False, groups=groups) for model in models]


def training_window_cut(score: Callable[[Any, Any], Any], data: Any, seed: int) -> float:
    """The one rule: the F1-macro cut of `score(X, groups)` (an ensemble's mean score) on the fixed stratified
    sample of `data`'s training windows."""
    import torch

    from search.training.metrics import choose_threshold
    from search.training.threshold import threshold_sample, threshold_sample_size

    sample = threshold_sample(data.y_train, threshold_sample_size(data.y_train.numel()), seed=seed)
    # Record RR from every training window of a patient, then the sample's (as training computes it).
    scores = score(data.X_train, data.groups_train)[sample.numpy()]
    return float(choose_threshold(torch.as_tensor(scores), data.y_train[sample], "f1_macro"))


def cut_on_training_windows(models: list[Any], data: Any, seed: int) -> float:
    """The one rule for in-memory models: their mean score's cut on the training-window sample."""
    import numpy as np

    return training_window_cut(lambda X, groups: np.mean(member_scores(models, X, groups), axis=0), data, seed)


def evaluate(models: list[Any], data: Any, threshold: float) -> dict[str, float]:
    import numpy as np

    from search.training.metrics import classification_metrics

    scores = np.mean(member_scores(models, data.X_test, data.groups_test), axis=0)
    metrics = classification_metrics(data.y_test.numpy(), scores, threshold)
    return {"roc_auc": metrics["roc_auc"], "f1_macro": metrics["f1_macro"]}


def one_outer_fold(
    design: Any, params: dict[str, Any], *, inner: int, epochs: int, seeds: int, fold_seed: int
) -> dict[str, Any]:
    """Every contender trained on `design`'s training patients, scored on its test (held-out) patients."""
    import copy

    import numpy as np
    import torch

    import ecgmodels
    from search.data import dataset_folds, fold_datasets
    from search.ship.seeds import train_seeds
    from search.training.config import TrainConfig
    from search.training.curve import curve_value
    from search.training.device import seed_everything
    from search.training.loop import TrainingRun
    from search.training.metrics import choose_threshold

    normalised, _ = design.normalised()  # one set of statistics, as a bundle has
    cfg = TrainConfig(epochs=epochs)
    inner_folds = dataset_folds(design, inner, fold_seed)
    views = fold_datasets(normalised, inner_folds)
    runs, states = [], []
    for view in views:
        seed_everything(cfg.seed)
        model = ecgmodels.build("cnn", n_channels=design.n_channels, seq_len=design.seq_len, fs=design.fs, **params)
        runs.append(TrainingRun(model, view, cfg, autoencoder=False, fs=design.fs))
        states.append([])
    for _ in range(epochs):  # in lockstep, as a --cv trial trains; each fold's weights kept per epoch
        for run, kept in zip(runs, states, strict=True):
            run.step()
            kept.append(copy.deepcopy(run.model.state_dict()))
    curve = [statistics.fmean(values) for values in zip(*(run.objective_curve() for run in runs), strict=True)]
    cv_value, chosen_epoch = curve_value(curve, cfg.selection, cfg.selection_window)
    # The scheduler is "none", so a fold model at epoch E is the model trained for E epochs from scratch.
    fold_models = []
    for run, kept in zip(runs, states, strict=True):
        run.model.load_state_dict(kept[chosen_epoch - 1])
        fold_models.append(run.model.eval())
    # Out-of-fold scores: each member on the inner patients it did not train on.
    oof = torch.cat([torch.as_tensor(member_scores([m], v.X_val, v.groups_val)[0]) for m, v in
                     zip(fold_models, views, strict=True)])  # fmt: skip
    oof_y = torch.cat([v.y_val for v in views])
    oof_cut = float(choose_threshold(oof, oof_y, "f1_macro"))
    training_cut = cut_on_training_windows(fold_models, normalised, cfg.seed)
    folds = {
        "fold ensemble, training-window cut": evaluate(fold_models, normalised, training_cut),
        "fold ensemble, out-of-fold cut": evaluate(fold_models, normalised, oof_cut),
    }
    refit_cfg = TrainConfig(epochs=chosen_epoch, selection="last")
    cpu = torch.device("cpu")
    results, _ = train_seeds("cnn", params, refit_cfg, normalised, seeds=seeds, device=cpu, fs=design.fs)
    refits = []
    for result in results:
        model = ecgmodels.build("cnn", n_channels=design.n_channels, seq_len=design.seq_len, fs=design.fs, **params)
        model.load_state_dict(result.state)
        refits.append(model.eval())
    single = [{"roc_auc": r.test_metrics["roc_auc"], "f1_macro": r.test_metrics["f1_macro"]} for r in results]
    return {
        "cv_value": cv_value,
        "chosen_epoch": chosen_epoch,
        "refit, one seed (mean)": {k: float(np.mean([s[k] for s in single])) for k in ("roc_auc", "f1_macro")},
        "refit, seed ensemble": evaluate(refits, normalised, cut_on_training_windows(refits, normalised, cfg.seed)),
        **folds,
    }


CONTENDERS = (
    "refit, one seed (mean)",
    "refit, seed ensemble",
    "fold ensemble, training-window cut",
    "fold ensemble, out-of-fold cut",
)


def main(argv: list[str] | None = None) -> int:
    def fold_seed_option(parser: Any) -> None:
        parser.add_argument("--fold-seed", type=int, default=0, help="seed of the outer and inner folds (default 0)")

    bench = _common.fold_bench(__doc__.splitlines()[0], argv, folds=OUTER, epochs=EPOCHS, more_options=fold_seed_option)
    from search.data import dataset_folds, fold_datasets

    args, dataset, outer_k, epochs = bench.args, bench.dataset, bench.folds, bench.epochs
    inner_k = 2 if args.quick else INNER
    seeds = 2 if args.quick else SEEDS
    params = model_params(dataset)
    info = _common.print_header(
        "fold ensemble vs refit seeds on held-out patients (nested CV)" + (" (--quick)" if args.quick else ""),
        data_label=bench.label,
        extra={"model": "cnn defaults + rhythm branch (average" + (", record-relative)" if dataset.has_groups else ")"),
               "outer folds": outer_k, "inner folds": inner_k, "fold seed": args.fold_seed, "epochs": epochs,
               "refit seeds": seeds},
    )  # fmt: skip
    outer_folds = dataset_folds(dataset, outer_k, args.fold_seed)
    per_fold = []
    for index, outer in enumerate(fold_datasets(dataset, outer_folds)):
        design = design_and_held_out(outer)
        result = one_outer_fold(design, params, inner=inner_k, epochs=epochs, seeds=seeds, fold_seed=args.fold_seed)
        per_fold.append(result)
        cells = " · ".join(f"{n}: {result[n]['roc_auc']:.3f} / {result[n]['f1_macro']:.3f}" for n in CONTENDERS)
        print(f"outer fold {index + 1}: inner CV {result['cv_value']:.3f} at epoch {result['chosen_epoch']} · {cells}",
              flush=True)  # fmt: skip
    rows = []
    for name in CONTENDERS:
        aucs = [fold[name]["roc_auc"] for fold in per_fold]
        f1s = [fold[name]["f1_macro"] for fold in per_fold]
        rows.append({"export": name, "held-out ROC-AUC (mean)": statistics.fmean(aucs),
                     "held-out F1 macro (mean)": statistics.fmean(f1s),
                     "ROC-AUC per outer fold": " / ".join(f"{v:.3f}" for v in aucs),
                     "F1 per outer fold": " / ".join(f"{v:.3f}" for v in f1s)})  # fmt: skip
    print()
    _common.print_table(rows, list(rows[0]))
    base = rows[1]
    for row in rows[2:]:
        wins = sum(fold[row["export"]]["roc_auc"] > fold["refit, seed ensemble"]["roc_auc"] for fold in per_fold)
        auc_ratio = row["held-out ROC-AUC (mean)"] / base["held-out ROC-AUC (mean)"]
        f1_ratio = row["held-out F1 macro (mean)"] / base["held-out F1 macro (mean)"]
        print(
            f"{row['export']} / seed ensemble: ROC-AUC {auc_ratio:.3f}, F1 macro {f1_ratio:.3f} "
            f"(higher ROC-AUC on {wins} of {len(per_fold)} outer folds)"
        )
    _common.write_json(args.json, "fold_ensemble", [*rows, {"per_fold": per_fold}], info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
