"""Scores relative to the patient: three ideas for unseen patients, measured before anything is built.

The F1 gap of `bench/quality.py` is a score whose cut does not carry from the training patients to new
ones. Record-relative timing (RR over the patient's own median RR) helped; this bench measures three
further ways of making the score relative to the patient, each using the patient's own unlabelled windows
as record-relative timing does. Patient-grouped CV over train+val (the folds `start --cv K` makes); the
test split is never read. Each arm's F1 macro is taken at the cut the one rule chooses (on its training
windows, ecgsearch's rule), so it shows whether the cut carries better.

  1. Record-relative features, into the logistic regression of `bench/record_relative.py` (its
     record-relative rhythm features are the baseline):
       - the beat-shape feature (log median beat QRS-band share) over the patient's own median, beside it;
       - every feature centred on the patient's own median (the validity flag left as it is);
       - the shortest and longest RR over the patient's median RR (the window's are over its own median).
  2. Beat-level scoring (multiple instances): each beat scored from its own timing and shape (the RR
     before and after it over the patient's median RR, their ratio, the RR before it over the window's
     median, its QRS-band share over the window's median and alone), the window's score the log-sum-exp
     of its beats' (a window is abnormal when any beat is), trained on window labels; alone and beside
     the window features. A premature beat with its compensatory pause is one beat's pair of intervals,
     which the window statistics (shortest RR, longest RR) see only apart.
  3. Per-patient batch-norm statistics (AdaBN, Li et al. 2016): the search's second starting point (cnn
     defaults + rhythm branch, `average`, record-relative) trained on each fold as a `--cv` trial trains
     it, then scored with its convolutions' batch-norm statistics re-estimated on each held-out patient's
     own windows (the cut: the same adaptation per training patient), and on all held-out windows
     together, against the trained statistics.

    python bench/patient_adaptation.py                 # MIT-BIH DS1 train+val, 5 folds (~5 min quiet)
    python bench/patient_adaptation.py --data DIR      # any six-file dataset with patient ids
    python bench/patient_adaptation.py --quick         # a tiny slice, 3 folds, 2 epochs (CI)
"""

from __future__ import annotations

import copy
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path

FOLDS, EPOCHS, FOLD_SEEDS = 5, 4, (0, 1, 2)  # 4 epochs: what `retrain` trained the starting point for in run 8
CHUNK = 256
RIDGE = 1e-3  # L2 on the regressions' weights, as `adapt_to_data` fits the rhythm branch
LOG_FLOOR = 1e-3
EXCLUDED_FROM_CENTRING = ("rhythm_valid",)


class RhythmView:
    """The rhythm features of train+val (record-relative), their per-beat counterparts and the labels."""

    def __init__(self, dataset: Any) -> None:
        import numpy as np
        import torch

        import ecgmodels
        from ecgmodels.rhythm import RELATIVE_FEATURE_NAMES, masked_median

        normalised, _ = dataset.normalised()
        X = torch.cat([normalised.X_train, normalised.X_val]).float()
        self.y = torch.cat([normalised.y_train, normalised.y_val]).numpy()
        groups = torch.cat([normalised.groups_train, normalised.groups_val])
        self.groups = groups.numpy()
        record_rr = ecgmodels.record_rr(X, groups, fs=dataset.fs)
        extractor = ecgmodels.RhythmFeatures(fs=dataset.fs, seq_len=dataset.seq_len).eval()
        windows, beats, masks = [], [], []
        with torch.inference_mode():
            for x, reference in zip(X.split(CHUNK), record_rr.split(CHUNK), strict=True):
                windows.append(extractor(x, reference))
                positions, band = extractor.beats(x)
                share = extractor.beat_shares(positions, band, x).clamp(min=1e-9)
                beat = positions >= 0
                rr, valid = extractor.intervals(positions)  # rr[:, j]: the interval before beat j
                window_rr = masked_median(rr, valid, neutral=1.0).unsqueeze(-1)
                window_share = masked_median(share, beat, neutral=1.0).clamp(min=1e-9).unsqueeze(-1)
                before, after = rr[:, 1:], rr[:, :-1]  # beats 1 … K-2: both neighbours can exist
                both = valid[:, 1:] & valid[:, :-1]
                record = reference.unsqueeze(-1)
                per_beat = torch.stack(
                    (
                        self._log(before / record),
                        self._log(after / record),
                        self._log(before / after),
                        self._log(before / window_rr),
                        (share[:, 1:-1] / window_share).log(),
                        share[:, 1:-1].log(),
                    ),
                    dim=-1,
                )
                beats.append(torch.where(both.unsqueeze(-1), per_beat, torch.zeros_like(per_beat)))
                masks.append(both)
        self.windows = torch.cat(windows).double().numpy()
        self.beats = torch.cat(beats).double()
        self.beat_mask = torch.cat(masks)
        self.names = RELATIVE_FEATURE_NAMES
        valid_rhythm = self.column("rhythm_valid") > 0
        self.patient_median = np.zeros_like(self.windows)
        for patient in np.unique(self.groups):
            mine = self.groups == patient
            counted = mine & valid_rhythm if (mine & valid_rhythm).any() else mine
            self.patient_median[mine] = np.median(self.windows[counted], axis=0)

    @staticmethod
    def _log(ratio: Any) -> Any:
        return ratio.clamp(min=LOG_FLOOR).log()

    def column(self, name: str) -> Any:
        return self.windows[:, self.names.index(name)]

    def feature_sets(self) -> dict[str, Any]:
        """The regression's inputs per arm, one row per window."""
        import numpy as np

        F, median = self.windows, self.patient_median
        share = self.names.index("log_beat_qrs_share")
        keep = np.array([name in EXCLUDED_FROM_CENTRING for name in self.names])
        rate = self.column("log_median_rr_over_record")  # log(window median RR / patient median RR)
        shortest = np.log(np.clip(self.column("min_rr_ratio"), LOG_FLOOR, None)) + rate
        longest = np.log(np.clip(self.column("max_rr_ratio"), LOG_FLOOR, None)) + rate
        return {
            "record-relative rhythm features (baseline)": F,
            "+ beat share over the patient's median": np.column_stack([F, F[:, share] - median[:, share]]),
            "every feature centred on the patient's median": np.where(keep, F, F - median),
            "+ shortest, longest RR over the patient's median RR": np.column_stack([F, shortest, longest]),
        }


def fit_scorer(view: RhythmView, train: Any, *, windows: bool, beats: bool) -> Callable[[Any], Any]:
    """A logistic score of the window features (`windows`) plus the log-sum-exp of per-beat logistic scores
    (`beats`), fitted to `train`'s window labels (L-BFGS, ridge RIDGE); returns index → probabilities."""
    import torch
    from torch.nn import functional

    F = torch.as_tensor(view.windows)
    B, mask = view.beats, view.beat_mask
    index = torch.as_tensor(train)
    y = torch.as_tensor(view.y[train], dtype=torch.float64)
    f_mean, f_std = F[index].mean(0), F[index].std(0).clamp(min=1e-6)
    counted = B[index][mask[index]]
    b_mean, b_std = counted.mean(0), counted.std(0).clamp(min=1e-6)
    a = torch.zeros(F.shape[1], dtype=torch.float64, requires_grad=True)
    w = torch.zeros(B.shape[-1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(2, dtype=torch.float64, requires_grad=True)

    def logits(rows: Any) -> Any:
        score = bias[0].expand(len(rows))
        if windows:
            score = score + ((F[rows] - f_mean) / f_std) @ a
        if beats:
            per_beat = ((B[rows] - b_mean) / b_std) @ w + bias[1]
            per_beat = torch.where(mask[rows], per_beat, torch.full_like(per_beat, -30.0))
            score = score + torch.logsumexp(per_beat, dim=-1)
        return score

    optimiser = torch.optim.LBFGS([a, w, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> Any:
        optimiser.zero_grad()
        loss = functional.binary_cross_entropy_with_logits(logits(index), y)
        loss = loss + RIDGE * (a.pow(2).sum() + w.pow(2).sum())
        loss.backward()
        return loss

    optimiser.step(closure)
    return lambda rows: torch.sigmoid(logits(torch.as_tensor(rows))).detach().numpy()


def adabn_rows(dataset: Any, folds: Any, epochs: int) -> dict[str, tuple[float, float, list[float]]]:
    """Arm → (mean ROC-AUC, mean F1 macro, ROC-AUC per fold) of the second starting point's fold models."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score
    from torch import nn

    from ecgmodels.rhythm import FeatureNorm
    from search.training.config import TrainConfig
    from search.training.metrics import choose_threshold
    from search.training.scoring import ScoringModel, score

    fitted = _common.fitted_cv_runs(
        dataset, folds, TrainConfig(epochs=epochs), _common.rhythm_starting_point(relative=True)
    )

    @torch.no_grad()
    def adapted(model: nn.Module, X: Any, record_rr: Any) -> ScoringModel:
        """A copy whose convolution batch norms hold the statistics of `X` (the rhythm features' own
        standardisation left as trained: centring the features on the patient is arm 1's question)."""
        copy_ = copy.deepcopy(model).eval()
        for norm in copy_.modules():
            if isinstance(norm, nn.BatchNorm1d) and not isinstance(norm, FeatureNorm):
                norm.reset_running_stats()
                norm.momentum = None  # a cumulative average over every batch of X
                norm.train()
        for x, r in zip(X.split(CHUNK), record_rr.split(CHUNK), strict=True):
            copy_(x, r)
        return ScoringModel(copy_.eval(), autoencoder=False)

    def per_patient(model: nn.Module, X: Any, record_rr: Any, groups: Any) -> Any:
        probabilities = np.zeros(len(X))
        groups = groups.to(X.device)
        for patient in torch.unique(groups):
            mine = groups == patient
            scorer = adapted(model, X[mine], record_rr[mine])
            probabilities[mine.cpu().numpy()] = score(scorer, X[mine], record_rr=record_rr[mine]).cpu().numpy()
        return probabilities

    results: dict[str, list[_common.HeldOut]] = {
        "trained statistics": [], "adapted to all held-out windows": [], "adapted per held-out patient": [],
    }  # fmt: skip
    for run, view in fitted:
        # The run holds its windows and their record RR (a classifier trains on every training window).
        model, X, record_rr, y = run.model, run.X_val, run.rr_val, run.y_val_cpu.numpy()
        trained = _common.run_held_out(run)
        adapted_cut = choose_threshold(
            per_patient(model, run.X_train, run.rr_train, view.groups_train), run.y_train.cpu().numpy(), "f1_macro"
        )
        results["trained statistics"].append(trained)
        results["adapted to all held-out windows"].append(
            _common.HeldOut(y, score(adapted(model, X, record_rr), X, record_rr=record_rr).cpu().numpy(), trained.cut)
        )
        results["adapted per held-out patient"].append(
            _common.HeldOut(y, per_patient(model, X, record_rr, view.groups_val), adapted_cut)
        )
    return {
        arm: (*_common.mean_of_folds(held), [roc_auc_score(fold.y, fold.probabilities) for fold in held])
        for arm, held in results.items()
    }


def main(argv: list[str] | None = None) -> int:
    bench = _common.fold_bench(__doc__.splitlines()[0], argv, folds=FOLDS, epochs=EPOCHS)
    import numpy as np

    from search.data import dataset_folds

    args, dataset, k, epochs = bench.args, bench.dataset, bench.folds, bench.epochs
    if not dataset.has_groups or dataset.fs is None:
        print(f"patient_adaptation: {bench.label} needs patient ids (groups_*.pt) and a sampling rate (meta.json fs)")
        return 2
    fold_seeds = FOLD_SEEDS[:1] if args.quick else FOLD_SEEDS
    info = _common.print_header(
        "scores relative to the patient, patient-grouped CV" + (" (--quick)" if args.quick else ""),
        data_label=bench.label,
        extra={"folds": k, "fold seeds (regressions)": list(fold_seeds), "epochs (AdaBN, fold seed 0)": epochs},
    )
    view = RhythmView(dataset)
    fold_draws = {seed: np.asarray(dataset_folds(dataset, k, seed)) for seed in fold_seeds}
    arms: dict[str, Callable[[Any], Callable[[Any], Any]]] = {
        name: _common.regression_scorer(features, view.y) for name, features in view.feature_sets().items()
    }
    arms["beat-level scores alone (log-sum-exp)"] = lambda train: fit_scorer(view, train, windows=False, beats=True)
    arms["rhythm features + beat-level scores"] = lambda train: fit_scorer(view, train, windows=True, beats=True)
    rows = []
    baseline: tuple[float, float] | None = None
    for name, scorer_for in arms.items():
        values = [_common.cv_scores(view.y, fold_draws[seed], scorer_for) for seed in fold_seeds]
        auc, f1 = statistics.fmean(a for a, _ in values), statistics.fmean(f for _, f in values)
        baseline = baseline or (auc, f1)
        rows.append({
            "arm": name, "ROC-AUC per fold seed": " / ".join(f"{a:.3f}" for a, _ in values),
            "F1 macro per fold seed": " / ".join(f"{f:.3f}" for _, f in values),
            "ROC-AUC ratio": auc / baseline[0], "F1 ratio": f1 / baseline[1],
        })  # fmt: skip
        print(f"{name}: done", flush=True)
    print()
    _common.print_table(rows, ["arm", "ROC-AUC per fold seed", "F1 macro per fold seed", "ROC-AUC ratio", "F1 ratio"])
    _common.write_json(args.json, "patient_adaptation", [{"part": "regression", **row} for row in rows], info)

    adaptation = adabn_rows(dataset, fold_draws[fold_seeds[0]], epochs)
    plain_auc, plain_f1, _ = adaptation["trained statistics"]
    table = [
        {"batch-norm statistics": arm, "ROC-AUC": auc, "F1 macro": f1,
         "ROC-AUC per fold": " ".join(f"{a:.3f}" for a in per_fold),
         "ROC-AUC ratio": auc / plain_auc, "F1 ratio": f1 / plain_f1}
        for arm, (auc, f1, per_fold) in adaptation.items()
    ]  # fmt: skip
    print()
    print(f"second starting point, {epochs} epochs, fold seed {fold_seeds[0]}:")
    _common.print_table(
        table, ["batch-norm statistics", "ROC-AUC", "F1 macro", "ROC-AUC per fold", "ROC-AUC ratio", "F1 ratio"]
    )
    _common.write_json(args.json, "patient_adaptation", [{"part": "adabn", **row} for row in table], info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
