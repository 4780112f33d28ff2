"""Record-relative amplitude: does putting each window on its own record's per-lead scale help new patients?

Record-relative beat timing (RR over the record's own median RR) helps on unseen patients. The amplitude
analogue is a candidate too: patients differ in QRS amplitude (electrode placement, body habitus), and
dividing each lead by the record's own typical amplitude would remove that before the model sees it.
This bench measures it before anything is built: every training and validation window has its record's
per-lead mean taken off and is divided by the record's median per-window std of that lead (over the
windows where the lead is present; a missing lead stays as it is), then the usual dataset normalisation
follows. Patient-grouped CV over train+val (the folds `start --cv K` makes); the test split is never read.

Compared, global normalisation alone vs record-scaled first:
  1. the `cnn` defaults and the search's second starting point (cnn defaults + rhythm branch, `average`,
     record-relative), trained as `--cv` trials train them: the trial value (`smoothed`, 3 epochs);
  2. the rhythm features (record-relative) into a logistic regression, over 3 fold seeds.
It prints the ratio record-scaled / global of each. Needs patient ids (`groups_*`).

    python bench/record_scale.py                 # MIT-BIH DS1 train+val, 5 folds, 8 epochs (~25 min quiet)
    python bench/record_scale.py --data DIR      # any six-file dataset with patient ids
    python bench/record_scale.py --quick         # a tiny slice, 3 folds, 2 epochs (CI)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path

FOLDS, EPOCHS, FOLD_SEEDS = 5, 8, (0, 1, 2)
RULES = ("global", "record-scaled")
# A lead whose std in a window is below this is absent there (MIT-BIH stores a missing lead as zeros).
PRESENT_STD = 1e-6


def record_scaled(X: Any, groups: Any) -> Any:
    """`X` with each record's leads centred on the record's mean and divided by its median per-window std."""
    import torch

    scaled = X.clone()
    for group in groups.unique():
        index = torch.nonzero(groups == group).flatten()
        windows = X[index]
        present = windows.std(dim=-1) > PRESENT_STD  # (windows, leads)
        for lead in range(X.shape[1]):
            where = present[:, lead]
            if not where.any():
                continue
            scale = windows[where, lead].std(dim=-1).median()
            centred = (windows[:, lead] - windows[where, lead].mean()) / scale
            scaled[index, lead] = torch.where(where[:, None], centred, windows[:, lead])
    return scaled


def main(argv: list[str] | None = None) -> int:
    bench = _common.fold_bench(__doc__.splitlines()[0], argv, folds=FOLDS, epochs=EPOCHS)
    from search.data import dataset_folds
    from search.training.config import TrainConfig
    from search.training.curve import curve_value

    args, dataset, k, epochs = bench.args, bench.dataset, bench.folds, bench.epochs
    if not dataset.has_groups or dataset.fs is None:
        print(f"{bench.label}: no patient ids (groups_*) or no sampling rate; record scaling needs both")
        return 2
    fold_seeds = FOLD_SEEDS[:1] if args.quick else FOLD_SEEDS
    info = _common.print_header(
        "record-relative amplitude vs global normalisation, patient-grouped CV" + (" (--quick)" if args.quick else ""),
        data_label=bench.label,
        extra={"folds": k, "fold seeds (regression)": list(fold_seeds), "epochs": epochs},
    )
    datasets = {
        "global": dataset,
        "record-scaled": dataclasses.replace(
            dataset,
            X_train=record_scaled(dataset.X_train, dataset.groups_train),
            X_val=record_scaled(dataset.X_val, dataset.groups_val),
        ),
    }
    starting = _common.rhythm_starting_point(relative=True)
    folds = dataset_folds(dataset, k, 0)
    cfg = TrainConfig(epochs=epochs)
    table = _common.ArmTable(RULES)
    for rule, data in datasets.items():
        for name, params in (("cnn defaults", {}), ("second starting point", starting)):
            curve = _common.mean_cv_curve(data, folds, cfg, params)
            table.put(f"{name}, trial value (smoothed, 3)", rule, curve_value(curve, "smoothed", 3)[0])
        values = _common.rhythm_regression_cv(data, fold_seeds, k, relative=True)
        for seed, value in zip(fold_seeds, values, strict=True):
            table.put(f"rhythm features (record-relative) + LR, fold seed {seed}", rule, value)
        print(f"{rule}: done", flush=True)
    table.report("record_scale", args.json, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
