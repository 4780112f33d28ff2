"""Does the CV figure hide how the model and the rhythm regression compare on new patients?

On DS1 patient-grouped CV the search's second starting point leads the rhythm features' logistic regression
on F1 macro, while on DS2 (and with the halves' roles swapped) the regression leads. A `--cv` trial reports
the mean of per-fold metrics, and each fold holds a few patients, so the between-patient part of a score (is
this patient's normal window scored below that patient's abnormal one?) barely counts; one test set of many
patients counts it fully. This bench scores both contenders on the same folds both ways: the mean of the
folds, and the held-out windows of every fold pooled into one set (each at its own fold's cut, the cut the
one rule chooses on that fold's training windows). If pooling moved the regression ahead, the CV figure
would be the thing to change. DS1 train+val only; the test split is never read.

    python bench/cv_pooling.py                 # MIT-BIH DS1 train+val, 5 folds, fold seeds 0-2 (~5 min quiet)
    python bench/cv_pooling.py --data DIR      # any six-file dataset with patient ids
    python bench/cv_pooling.py --quick         # a tiny slice, 3 folds, 2 epochs (CI)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path
from patient_adaptation import RhythmView

FOLDS, EPOCHS, FOLD_SEEDS = 5, 4, (0, 1, 2)  # as bench/patient_adaptation.py: the starting point's 4 epochs


def model_held_out(dataset: object, folds: object, epochs: int) -> list[_common.HeldOut]:
    """The second starting point's fold models (record-relative), trained as a `--cv` trial trains them."""
    from search.training.config import TrainConfig

    params = _common.rhythm_starting_point(relative=True)
    return [
        _common.run_held_out(run)
        for run, _view in _common.fitted_cv_runs(dataset, folds, TrainConfig(epochs=epochs), params)
    ]


def main(argv: list[str] | None = None) -> int:
    bench = _common.fold_bench(__doc__.splitlines()[0], argv, folds=FOLDS, epochs=EPOCHS)
    import numpy as np

    from search.data import dataset_folds

    args, dataset, k, epochs = bench.args, bench.dataset, bench.folds, bench.epochs
    if not dataset.has_groups or dataset.fs is None:
        print(f"cv_pooling: {bench.label} needs patient ids (groups_*.pt) and a sampling rate (meta.json fs)")
        return 2
    fold_seeds = FOLD_SEEDS[:1] if args.quick else FOLD_SEEDS
    info = _common.print_header(
        "CV figures: mean of folds against pooled held-out windows" + (" (--quick)" if args.quick else ""),
        data_label=bench.label,
        extra={"folds": k, "fold seeds": list(fold_seeds), "epochs (starting point)": epochs},
    )
    view = RhythmView(dataset)
    features = next(iter(view.feature_sets().values()))  # the record-relative rhythm features
    regression = _common.regression_scorer(features, view.y)
    rows = []
    for seed in fold_seeds:
        folds = np.asarray(dataset_folds(dataset, k, seed))
        contenders = {
            "rhythm regression (record-relative features)": _common.held_out_folds(view.y, folds, regression),
            "second starting point's fold models": model_held_out(dataset, folds, epochs),
        }
        figures = {
            contender: (_common.mean_of_folds(held), _common.pooled_out_of_fold(held))
            for contender, held in contenders.items()
        }
        (lr_mean, lr_pooled), (model_mean, model_pooled) = figures.values()
        for contender, (mean, pooled) in figures.items():
            rows.append({
                "fold seed": seed, "contender": contender,
                "ROC-AUC, mean of folds": mean[0], "ROC-AUC, pooled": pooled[0],
                "F1 macro, mean of folds": mean[1], "F1 macro, pooled": pooled[1],
            })  # fmt: skip
        rows.append({
            "fold seed": seed, "contender": "model − regression",
            "ROC-AUC, mean of folds": model_mean[0] - lr_mean[0], "ROC-AUC, pooled": model_pooled[0] - lr_pooled[0],
            "F1 macro, mean of folds": model_mean[1] - lr_mean[1], "F1 macro, pooled": model_pooled[1] - lr_pooled[1],
        })  # fmt: skip
        print(f"fold seed {seed}: done", flush=True)
    print()
    columns = ["fold seed", "contender", "ROC-AUC, mean of folds", "ROC-AUC, pooled", "F1 macro, mean of folds",
               "F1 macro, pooled"]  # fmt: skip
    _common.print_table(rows, columns)
    _common.write_json(args.json, "cv_pooling", rows, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
