"""Does the rhythm branch's data-dependent start help? Patient-grouped CV, the test split never read.

The second starting point of every classifier search is the family defaults with the rhythm branch and
`average` fusion: the network's probability averaged with a logistic regression on the rhythm features.
That regression can start at random and learn at the network's learning rate, or start as the logistic
regression fitted to the training windows' features (`ecgmodels.adapt_to_data`, what the trainer does).
This bench trains that starting point both ways on the same patient-grouped folds (the folds `start --cv
K` makes) and prints the CV ROC-AUC per epoch and the trial value (`smoothed`, as a trial computes it),
with the ratio adapted / random start.

    python bench/rhythm_start.py                    # MIT-BIH DS1 train+val, 5 folds, 8 epochs
    python bench/rhythm_start.py --data DIR         # any six-file dataset (patient ids make the folds grouped)
    python bench/rhythm_start.py --quick            # a tiny slice, 3 folds, 2 epochs (CI)
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path

FOLDS, EPOCHS = 5, 8


def cross_validated_curve(dataset: Any, folds: Any, epochs: int, *, adapt: bool) -> list[float]:
    """The mean CV ROC-AUC per epoch of the cnn defaults with the rhythm branch (`average`)."""
    from search.training.config import TrainConfig

    params = _common.rhythm_starting_point(relative=False)
    # The trainer adapts at construction; the random-start arm replaces that call with nothing.
    no_adapt = mock.patch("search.training.loop.adapt_to_data", lambda *_args: None)
    with contextlib.nullcontext() if adapt else no_adapt:
        return _common.mean_cv_curve(dataset, folds, TrainConfig(epochs=epochs), params)


def main(argv: list[str] | None = None) -> int:
    bench = _common.fold_bench(__doc__.splitlines()[0], argv, folds=FOLDS, epochs=EPOCHS)
    from search.data import dataset_folds
    from search.training.curve import curve_value

    args, dataset, folds_k, epochs = bench.args, bench.dataset, bench.folds, bench.epochs
    info = _common.print_header(
        "rhythm branch (average fusion): regression fitted to the training windows vs random start"
        + (" (--quick)" if args.quick else ""),
        data_label=bench.label,
        extra={"model": "cnn defaults + rhythm branch (average), trainer defaults", "folds": folds_k, "epochs": epochs},
    )
    folds = dataset_folds(dataset, folds_k, 0)
    curves = {name: cross_validated_curve(dataset, folds, epochs, adapt=adapt) for name, adapt in
              (("random start", False), ("adapted", True))}  # fmt: skip
    rows = [
        {"epoch": epoch + 1, **{f"CV ROC-AUC {name}": curve[epoch] for name, curve in curves.items()}}
        for epoch in range(epochs)
    ]
    values = {name: curve_value(curve, "smoothed", 3)[0] for name, curve in curves.items()}
    rows.append({"epoch": "trial value (smoothed, 3)", **{f"CV ROC-AUC {name}": v for name, v in values.items()}})
    print()
    _common.print_table(rows, list(rows[0]))
    ratio = values["adapted"] / values["random start"]
    print(f"adapted / random start (trial value): {ratio:.3f}")
    _common.write_json(args.json, "rhythm_start", [*rows, {"ratio": ratio}], info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
