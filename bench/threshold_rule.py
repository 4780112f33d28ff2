"""Where the exported threshold should come from, measured on the training patients only.

A classifier's window label is `score >= threshold`. ecgsearch has one rule for every family: the cut that
maximises the threshold metric (F1 macro) on a fixed sample of the *training* windows. On unseen patients
the scores shift, so F1 there can fall even when the ranking (ROC-AUC) holds. The obvious alternative,
the one scikit-learn's `TunedThresholdClassifierCV` takes, tunes the cut on held-out data instead: under
patient-grouped cross-validation each fold's model has a cut that is best on its own held-out patients,
and the refit on all the data would take the median of those. This bench measures whether that transfers.

Patient-grouped K-fold CV over the pooled train+val windows (the folds `ecgsearch start --cv K` makes);
the test split is never read. For each fold and epoch, F1 macro on that fold's held-out patients at:
  (i)   the training-window cut (the rule ecgsearch uses): the baseline;
  (ii)  the median of the *other* folds' held-out-optimal cuts: what a CV-tuned rule would hand to a
        model it has not seen, on patients it has not seen (leave-one-fold-out, so nothing is scored at
        a cut tuned on it);
  (iii) 0.5, the fixed cut of a calibrated probability.
Printed: F1 macro per rule (mean over folds) at every epoch, and (ii)/(i) and (iii)/(i) as ratios.

    python bench/threshold_rule.py                 # default cnn with the rhythm branch, 8 epochs (~5 min)
    python bench/threshold_rule.py --plain         # the default cnn as it is
    python bench/threshold_rule.py --focal         # trained as the searches' picks often are: focal
                                                   # loss, pos_weight auto (scores far from 0.5)
    python bench/threshold_rule.py --quick         # a tiny slice, 2 epochs (CI)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path

FOLDS, EPOCHS, THRESHOLD_METRIC = 5, 8, "f1_macro"
RULES = ("training windows", "other folds' held-out cut", "0.5")


def fold_scores(dataset: Any, folds: Any, params: dict[str, Any], cfg: Any) -> list[list[dict[str, Any]]]:
    """Per fold, per epoch: the loop's training-window cut, and the held-out scores and labels."""
    import ecgmodels
    from search.data import fold_datasets
    from search.training.loop import TrainingRun
    from search.training.scoring import score

    per_fold = []
    for k, fold in enumerate(fold_datasets(dataset, folds)):
        model = ecgmodels.build("cnn", n_channels=dataset.n_channels, seq_len=dataset.seq_len, fs=dataset.fs, **params)
        run = TrainingRun(model, fold.normalised()[0], cfg, autoencoder=False, fs=dataset.fs)
        epochs_of_fold = []
        while not run.finished:
            entry = run.step()
            scores = score(run.scorer, run.X_val).cpu().numpy()
            epochs_of_fold.append({"training_cut": entry["threshold"], "scores": scores, "y": run.y_val_cpu.numpy()})
        print(f"  fold {k}: {len(run.y_val_cpu)} held-out windows, trained {run.epoch} epochs", flush=True)
        per_fold.append(epochs_of_fold)
    return per_fold


def f1_by_rule(per_fold: list[list[dict[str, Any]]], epoch: int) -> dict[str, list[float]]:
    """F1 macro on each fold's held-out windows at each rule's cut, at `epoch` (from 0)."""
    from search.training.metrics import choose_threshold, classification_metrics

    held_out_cuts = [choose_threshold(f[epoch]["scores"], f[epoch]["y"], THRESHOLD_METRIC) for f in per_fold]
    f1: dict[str, list[float]] = {rule: [] for rule in RULES}
    for k, fold in enumerate(per_fold):
        at = fold[epoch]
        others = statistics.median(cut for j, cut in enumerate(held_out_cuts) if j != k)
        for rule, cut in zip(RULES, (at["training_cut"], others, 0.5), strict=True):
            f1[rule].append(classification_metrics(at["y"], at["scores"], cut)[THRESHOLD_METRIC])
    return f1


def main(argv: list[str] | None = None) -> int:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--plain", action="store_true", help="the default cnn without the rhythm branch")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs per fold (default {EPOCHS})")
    parser.add_argument("--focal", action="store_true", help="focal loss with pos_weight auto (default: BCE)")
    args = parser.parse_args(argv)
    import ecgmodels
    from search.data import dataset_folds, load_dataset
    from search.training.config import TrainConfig

    data = _common.prepared_data()
    dataset = load_dataset(data.folder)
    if args.quick:
        dataset = dataset.subset(max_train=120, max_val=60, max_test=2, seed=0)
    folds_k = 3 if args.quick else FOLDS
    epochs = args.epochs or (2 if args.quick else EPOCHS)
    params = {**ecgmodels.default_params("cnn"), "rhythm_branch": not args.plain}
    loss = {"loss": "focal", "pos_weight": "auto"} if args.focal else {}
    cfg = TrainConfig(epochs=epochs, **loss)
    info = _common.print_header(
        "threshold rule: training-window cut vs cuts tuned on other folds' held-out patients"
        + (" (--quick)" if args.quick else ""),
        data_label=data.label,
        extra={
            "model": f"cnn defaults, rhythm_branch={params['rhythm_branch']}",
            "loss": f"{cfg.loss}, pos_weight {cfg.pos_weight}",
            "folds": folds_k,
            "epochs": epochs,
        },
    )
    per_fold = fold_scores(dataset, dataset_folds(dataset, folds_k, 0), params, cfg)
    rows = []
    for epoch in range(min(len(fold) for fold in per_fold)):
        f1 = f1_by_rule(per_fold, epoch)
        means = {rule: statistics.fmean(values) for rule, values in f1.items()}
        baseline = means[RULES[0]]
        rows.append({
            "epoch": epoch + 1,
            **{f"F1 {rule}": value for rule, value in means.items()},
            "(ii)/(i)": means[RULES[1]] / baseline if baseline else float("nan"),
            "(iii)/(i)": means[RULES[2]] / baseline if baseline else float("nan"),
            "folds (i)": " ".join(f"{v:.2f}" for v in f1[RULES[0]]),
            "folds (ii)": " ".join(f"{v:.2f}" for v in f1[RULES[1]]),
        })  # fmt: skip
    print()
    _common.print_table(rows, list(rows[0]))
    _common.write_json(args.json, "threshold_rule", rows, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
