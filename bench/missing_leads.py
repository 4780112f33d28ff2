"""Missing leads in the normalisation: statistics over the windows that have the lead vs over all windows.

Datasets of multi-lead windows often lack a lead in some records, stored as zeros (MIT-BIH: every record
has MLII and one of V1 and V5, so V5 is present in about one window in eleven). Plain per-lead
normalisation takes the lead's std over all windows, zeros included, which inflates the lead wherever it
is present; ecgsearch now takes a lead's mean and std over the windows where it is present and maps a
missing (flat) lead to zeros (`search.data.NormStats`). This bench measures the two rules on
patient-grouped CV over train+val (the folds `start --cv K` makes; the test split is never read):

  1. the rhythm features into a logistic regression (absolute and record-relative rate), over 3 fold seeds;
  2. the `cnn` defaults and the search's second starting point (cnn defaults + rhythm branch, `average`,
     record-relative where patient ids exist), trained as `--cv` trials train them: the trial value
     (`smoothed`, 3 epochs) and the last epoch.

It prints the ratio present-only / plain of each.

    python bench/missing_leads.py                 # MIT-BIH DS1 train+val, 5 folds, 8 epochs
    python bench/missing_leads.py --data DIR      # any six-file dataset
    python bench/missing_leads.py --quick         # a tiny slice, 3 folds, 2 epochs (CI)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path

FOLDS, EPOCHS, FOLD_SEEDS = 5, 8, (0, 1, 2)
RULES = ("plain", "present-only")


@contextlib.contextmanager
def normalisation_rule(rule: str) -> Iterator[None]:
    """Inside: `ECGDataset.norm_stats` computes statistics by `rule` ("plain": over all windows, no zeroing,
    the rule before; "present-only": ecgsearch's own)."""
    import torch

    from search.data import ECGDataset, NormStats
    from search.data.dataset import STD_FLOOR

    if rule == "present-only":
        yield
        return
    own = ECGDataset.norm_stats

    def plain(self: Any) -> Any:
        var, mean = torch.var_mean(self.X_train.to(torch.float64), dim=(0, 2), correction=0)
        return NormStats(mean=mean.tolist(), std=var.sqrt().clamp_min(STD_FLOOR).tolist())

    ECGDataset.norm_stats = plain
    try:
        yield
    finally:
        ECGDataset.norm_stats = own


def main(argv: list[str] | None = None) -> int:
    bench = _common.fold_bench(__doc__.splitlines()[0], argv, folds=FOLDS, epochs=EPOCHS)
    from search.data import dataset_folds
    from search.training.config import TrainConfig
    from search.training.curve import curve_value

    args, dataset, k, epochs = bench.args, bench.dataset, bench.folds, bench.epochs
    patients = dataset.has_groups and dataset.fs is not None
    fold_seeds = FOLD_SEEDS[:1] if args.quick else FOLD_SEEDS
    present = (dataset.X_train.amax(dim=-1) > dataset.X_train.amin(dim=-1)).float().mean(dim=0)
    info = _common.print_header(
        "missing leads: present-only vs plain normalisation, patient-grouped CV" + (" (--quick)" if args.quick else ""),
        data_label=bench.label,
        extra={"folds": k, "fold seeds (regression)": list(fold_seeds), "epochs": epochs,
               "share of training windows with each lead": [round(float(v), 3) for v in present]},
    )  # fmt: skip
    starting = _common.rhythm_starting_point(relative=patients)
    folds = dataset_folds(dataset, k, 0)
    cfg = TrainConfig(epochs=epochs)
    table = _common.ArmTable(RULES)
    for rule in RULES:
        with normalisation_rule(rule):
            for relative in (False, True) if patients else (False,):
                label = "record-relative" if relative else "absolute"
                values = _common.rhythm_regression_cv(dataset, fold_seeds, k, relative=relative)
                for seed, value in zip(fold_seeds, values, strict=True):
                    table.put(f"rhythm features ({label}) + LR, fold seed {seed}", rule, value)
            for name, params in (("cnn defaults", {}), ("second starting point", starting)):
                curve = _common.mean_cv_curve(dataset, folds, cfg, params)
                table.put(f"{name}, trial value (smoothed, 3)", rule, curve_value(curve, "smoothed", 3)[0])
                table.put(f"{name}, epoch {epochs}", rule, curve[-1])
            print(f"{rule}: done", flush=True)
    table.report("missing_leads", args.json, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
