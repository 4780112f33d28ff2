"""Record-relative timing on unseen patients: the rate over the patient's own median RR vs the absolute rate.

Patient-grouped cross-validation over train+val (the folds `start --cv K` makes); the test split is never
read. Two measurements, each with the rhythm features' two rate features absolute and record-relative
(`rhythm_relative`, ecgmodels/rhythm.py), everything else equal:

  1. the rhythm features into a logistic regression (scikit-learn), over several fold seeds: cheap, so
     the spread between fold draws shows beside the difference;
  2. the search's second starting point (cnn defaults + rhythm branch, `average` fusion) trained as a
     `--cv` trial trains it: CV ROC-AUC per epoch and the trial value (`smoothed`, 3 epochs).

It prints the ratio record-relative / absolute of each. Needs patient ids (groups_*.pt): without them a
patient's record RR is undefined.

    python bench/record_relative.py                 # MIT-BIH DS1 train+val, 5 folds, 8 epochs
    python bench/record_relative.py --data DIR      # any six-file dataset with patient ids
    python bench/record_relative.py --quick         # a tiny slice, 3 folds, 2 epochs (CI)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path

FOLDS, EPOCHS, FOLD_SEEDS = 5, 8, (0, 1, 2)
ARMS = (("absolute", False), ("record-relative", True))


def starting_point_curve(dataset: Any, folds: Any, epochs: int, *, relative: bool) -> list[float]:
    """The mean CV ROC-AUC per epoch of the cnn defaults with the rhythm branch (`average`)."""
    from search.training.config import TrainConfig

    params = _common.rhythm_starting_point(relative=relative)
    return _common.mean_cv_curve(dataset, folds, TrainConfig(epochs=epochs), params)


def main(argv: list[str] | None = None) -> int:
    bench = _common.fold_bench(__doc__.splitlines()[0], argv, folds=FOLDS, epochs=EPOCHS)
    from search.data import dataset_folds
    from search.training.curve import curve_value

    args, dataset, k, epochs = bench.args, bench.dataset, bench.folds, bench.epochs
    if not dataset.has_groups or dataset.fs is None:
        print(f"record_relative: {dataset.source} needs patient ids (groups_*.pt) and a sampling rate (meta.json fs)")
        return 2
    fold_seeds = FOLD_SEEDS[:1] if args.quick else FOLD_SEEDS
    info = _common.print_header(
        "record-relative vs absolute rate features, patient-grouped CV" + (" (--quick)" if args.quick else ""),
        data_label=bench.label,
        extra={"folds": k, "fold seeds (regression)": list(fold_seeds), "epochs (starting point)": epochs},
    )
    regression = {
        name: _common.rhythm_regression_cv(dataset, fold_seeds, k, relative=relative) for name, relative in ARMS
    }
    rows: list[dict[str, Any]] = []
    for index, seed in enumerate(fold_seeds):
        rows.append({"model": f"rhythm features + LR, fold seed {seed}",
                     **{name: regression[name][index] for name, _ in ARMS}})  # fmt: skip
    folds = dataset_folds(dataset, k, 0)
    curves = {name: starting_point_curve(dataset, folds, epochs, relative=relative) for name, relative in ARMS}
    for epoch in range(epochs):
        rows.append({"model": f"cnn defaults + rhythm (average), epoch {epoch + 1}",
                     **{name: curve[epoch] for name, curve in curves.items()}})  # fmt: skip
    values = {name: curve_value(curve, "smoothed", 3)[0] for name, curve in curves.items()}
    rows.append({"model": "cnn defaults + rhythm (average), trial value (smoothed, 3)", **values})
    print()
    _common.print_table(rows, ["model", *(name for name, _ in ARMS)])
    regression_ratio = statistics.fmean(regression["record-relative"]) / statistics.fmean(regression["absolute"])
    trial_ratio = values["record-relative"] / values["absolute"]
    print(f"record-relative / absolute: logistic regression (mean over fold seeds) {regression_ratio:.3f}, "
          f"starting point's trial value {trial_ratio:.3f}")  # fmt: skip
    _common.write_json(args.json, "record_relative", [*rows, {"regression_ratio": regression_ratio,
                                                             "trial_ratio": trial_ratio}], info)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
