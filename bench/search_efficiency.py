"""Search efficiency: default ecgsearch (TPE + Hyperband pruning) against random search without pruning.

Both run the real trial objective (`search.optimize.objective.TrialObjective`: sample from the `cnn` space, build,
`fit`, report every epoch, prune) in in-memory Optuna studies, on the real MIT-BIH DS1 training and
validation windows (never the test split), with the same epoch budget per trial, the same total epoch
budget per run and the same seeds. A run stops starting trials once its total budget is consumed.

Reported: the best validation objective (of completed trials: what `study.best_value` and `retrain`
use) at a few points of the epoch budget; per seed, the epochs the contender needs to reach the
baseline's final best (target: at most 1/3 of the baseline's epochs); the fraction of epochs pruning
saved (1 - epochs trained / epochs its trials would have trained unpruned).

`--cv K` (issue 14): pruning under patient-grouped K-fold cross-validation over the pooled DS1
train+val windows (folds made and stored as `ecgsearch start --cv K` makes them). Three contenders, the
same TPE sampler and seed, the same `cnn` space, the same total budget of fold-epochs (an epoch of one
fold's model counts once; an unpruned trial costs K x epochs):
  (A) what ecgsearch does: the real `TrialObjective` of a `cv_folds=K` study definition, the K folds
      trained in lockstep and the per-epoch mean over folds reported to the Hyperband pruner;
  (B) Optuna's `WilcoxonPruner` across folds: the folds trained one after another (in a per-trial
      shuffled order, as Optuna's documentation advises), each fold's value (the selection rule on its
      own curve) reported with step = fold index, `trial.should_prune()` after every fold but the last
      (after the last one there is no work left to save). Composed here from the real pieces (the
      space, `spaces.build_model` -> `ecgmodels.build`, `search.training.loop.fit`); not a product mode;
  (C) no pruning (the same lockstep objective, `NopPruner`): the baseline.
A completed trial's value is the same in all three: the study's selection rule on the mean curve over
folds. Reported: trials trained and pruned, fold-epochs saved against the same trials unpruned, the
best CV value of completed trials at 50% and 100% of the budget, wall time. `--quick` runs both
sections at toy sizes (CI).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path

SPACE = "cnn"
OBJECTIVE = "roc_auc"
TARGET_FRACTION = 1 / 3
METHODS = {
    "ecgsearch (tpe + hyperband)": ("tpe", "hyperband"),
    "random, no pruning": ("random", "none"),
}
BUDGET_POINTS = (0.25, 0.5, 0.75, 1.0)
MAX_REJECTED = 500


def make_definition(dataset: Any, *, sampler: str, pruner: str, seed: int, epochs: int, max_params: int) -> Any:
    import optuna
    import torch

    from search import __version__
    from studies import StudyDefinition

    return StudyDefinition(
        space=SPACE,
        data_path=str(dataset.source),
        data_fingerprint=dataset.fingerprint(),
        n_channels=dataset.n_channels,
        seq_len=dataset.seq_len,
        objective=OBJECTIVE,
        direction="maximize",
        epochs=epochs,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        max_params=max_params,
        trials_budget=None,  # this benchmark stops on epochs, not trials
        ecgsearch_version=__version__,
        optuna_version=optuna.__version__,
        torch_version=torch.__version__,
    )


def run_search(dataset: Any, *, method: str, seed: int, epochs: int, total_epochs: int, max_params: int) -> dict:
    """One search until `total_epochs` are consumed; the trajectory of (epochs consumed, best so far)."""
    import optuna
    import torch

    from search.optimize.objective import TRIAL_FAILURES, TrialObjective
    from studies import write_definition

    sampler_name, pruner_name = METHODS[method]
    definition = make_definition(
        dataset, sampler=sampler_name, pruner=pruner_name, seed=seed, epochs=epochs, max_params=max_params
    )
    study = optuna.create_study(
        direction="maximize", sampler=definition.make_sampler(), pruner=definition.make_pruner()
    )
    write_definition(study, definition)
    objective = TrialObjective(definition=definition, splits=[dataset], device=torch.device("cpu"))
    consumed, best = 0, -math.inf
    trajectory: list[tuple[int, float]] = []  # after every trained trial
    trained, pruned, invalid = 0, 0, 0
    started = time.perf_counter()
    while consumed < total_epochs:
        study.optimize(objective, n_trials=1, catch=TRIAL_FAILURES, gc_after_trial=False)
        trial = study.trials[-1]
        epochs_run = len(trial.user_attrs.get("history") or [])
        if epochs_run == 0:
            invalid += 1  # rejected before training (over max_params): costs no epoch
            if invalid > MAX_REJECTED:
                raise SystemExit(f"--max-params {max_params}: {invalid} sampled models rejected; raise it")
            continue
        trained += 1
        consumed += epochs_run
        if trial.state == optuna.trial.TrialState.PRUNED:
            pruned += 1
        if trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None and math.isfinite(trial.value):
            best = max(best, trial.value)
        trajectory.append((consumed, best))
    return {
        "method": method,
        "seed": seed,
        "trajectory": trajectory,
        "consumed": consumed,
        "trained_trials": trained,
        "pruned_trials": pruned,
        "invalid_trials": invalid,
        "pruning_saved": 1 - consumed / (trained * epochs),
        "seconds": time.perf_counter() - started,
    }


def best_at(trajectory: list[tuple[int, float]], budget: float) -> float:
    """Best completed value among trials that had finished within `budget` epochs."""
    values = [best for consumed, best in trajectory if consumed <= budget]
    return values[-1] if values else -math.inf


def epochs_to_reach(trajectory: list[tuple[int, float]], value: float) -> int | None:
    for consumed, best in trajectory:
        if best >= value:
            return consumed
    return None


def _fmt(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.4f}"


# ---- pruning under cross-validation (--cv K, issue 14) -------------------------------------------------

CV_METHODS = {
    "(A) lockstep + hyperband": "hyperband",
    "(B) wilcoxon across folds": "wilcoxon",
    "(C) no pruning": "none",
}
CV_BUDGET_POINTS = (0.5, 1.0)
CV_UNPRUNED_TRIALS = 10  # the default budget: what ten unpruned trials cost
CV_SELECTION = "smoothed"  # what `ecgsearch start` stores by default (--selection smoothed, window 3)
CV_SELECTION_WINDOW = 3
FOLD_EPOCHS_ATTR = "bench_fold_epochs"  # (B) records the fold-epochs it trained, pruned or not


def earliest_wilcoxon_prune(k: int, p_threshold: float, n_startup_steps: int) -> int | None:
    """The first fold after which `WilcoxonPruner` can prune at all (every fold so far worse than the best
    trial's), or None when that is never before the last fold: the one-sided signed-rank test on n pairs
    cannot give p below 2^-n, so with few folds the pruner has no power whatever the values are."""
    import scipy.stats

    for n in range(max(2, n_startup_steps), k):  # after fold k nothing is left to save
        p = scipy.stats.wilcoxon([-(i + 1.0) for i in range(n)], alternative="less", zero_method="zsplit").pvalue
        if p < p_threshold:
            return n
    return None


def cv_definition(dataset: Any, *, pruner: str, seed: int, epochs: int, max_params: int, k: int) -> Any:
    """The definition `ecgsearch start --cv K` would store (TPE, seed, smoothed selection, the data's fs)."""
    from dataclasses import replace

    from search.data import ASSUMED_WINDOW_S

    base = make_definition(dataset, sampler="tpe", pruner=pruner, seed=seed, epochs=epochs, max_params=max_params)
    return replace(
        base,
        cv_folds=k,
        selection=CV_SELECTION,
        selection_window=CV_SELECTION_WINDOW,
        fs=dataset.fs or dataset.seq_len / ASSUMED_WINDOW_S,
    )


class FoldByFoldObjective:
    """(B): the folds trained one after another, each fold's value reported at step = fold index, and
    `WilcoxonPruner` asked after every fold but the last. Sampling, seeding, building and training are the
    product's own (as `TrialObjective` does them); only the order of the work and what is reported differ."""

    def __init__(self, definition: Any, splits: list[Any]) -> None:
        import spaces
        from search.optimize.space_context import space_context

        self.definition, self.splits = definition, splits
        self.space = spaces.get(definition.space)
        self.context = space_context(definition)

    def _build(self, config: dict[str, Any]) -> Any:
        import spaces
        from search.training.device import seed_everything

        seed_everything(config["seed"])  # every fold's model starts from the same weights, as in lockstep
        data = self.splits[0]
        return spaces.build_model(  # ecgmodels.build, then the max_params check
            config,
            n_channels=data.n_channels,
            seq_len=data.seq_len,
            fs=self.definition.fs,
            max_params=self.definition.max_params,
        )[0]

    def __call__(self, trial: Any) -> float:
        import random

        import optuna
        import torch

        import ecgmodels
        from search.optimize.objective import cross_validated, sample_config
        from search.training.config import split_config
        from search.training.curve import curve_value
        from search.training.loop import fit, reported_metrics

        definition = self.definition
        config = sample_config(trial, definition, self.space, self.context)
        trial.set_user_attr("config", config)
        family, _model_params, cfg = split_config(config)
        model = self._build(config)  # an oversized or impossible model fails here, before any epoch
        order = list(range(len(self.splits)))
        random.Random(config["seed"]).shuffle(order)
        histories: dict[int, list[dict[str, Any]]] = {}
        trained = 0

        def count_epoch(epoch: int, metrics: dict[str, float]) -> None:
            nonlocal trained
            trained += 1
            trial.set_user_attr(FOLD_EPOCHS_ATTR, trained)

        for position, fold in enumerate(order):
            if position:
                model = self._build(config)
            result = fit(
                model,
                self.splits[fold],
                cfg,
                autoencoder=ecgmodels.is_autoencoder(family),
                device=torch.device("cpu"),
                on_epoch=count_epoch,
                fs=definition.fs,
            )
            histories[fold] = result.history
            trial.report(float(result.best_value), fold)
            if position < len(order) - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {position + 1} of {len(order)} folds")
        # The value (A) and (C) give the same trial: the selection rule on the mean curve over folds.
        per_epoch = zip(*(histories[fold] for fold in sorted(histories)), strict=True)
        mean_curve = [
            cross_validated([reported_metrics(entry) for entry in entries], cfg.objective)[f"val_{cfg.objective}"]
            for entries in per_epoch
        ]
        return float(curve_value(mean_curve, cfg.selection, cfg.selection_window)[0])


def fold_epochs_of(trial: Any, method: str, k: int) -> int:
    """Fold-epochs a finished trial trained: (B) counts its own; a lockstep trial trains k per epoch."""
    if CV_METHODS[method] == "wilcoxon":
        return int(trial.user_attrs.get(FOLD_EPOCHS_ATTR) or 0)
    return k * len(trial.user_attrs.get("history") or [])


def run_cv_search(
    pool: Any,
    folds: list[int],
    splits: list[Any],
    *,
    method: str,
    seed: int,
    k: int,
    epochs: int,
    total_fold_epochs: int,
    max_params: int,
    wilcoxon_p: float,
) -> dict[str, Any]:
    """One cross-validated search until `total_fold_epochs` are consumed; its trajectory and counts."""
    import optuna
    import torch

    from search.optimize.objective import TRIAL_FAILURES, TrialObjective
    from search.optimize.splits import folds_digest
    from studies import write_definition, write_folds

    kind = CV_METHODS[method]
    definition = cv_definition(
        pool, pruner="none" if kind == "wilcoxon" else kind, seed=seed, epochs=epochs, max_params=max_params, k=k
    )
    pruner = optuna.pruners.WilcoxonPruner(p_threshold=wilcoxon_p) if kind == "wilcoxon" else definition.make_pruner()
    study = optuna.create_study(direction="maximize", sampler=definition.make_sampler(), pruner=pruner)
    write_definition(study, definition)
    write_folds(study, folds)
    if kind == "wilcoxon":
        objective: Any = FoldByFoldObjective(definition, splits)
    else:
        objective = TrialObjective(
            definition=definition, splits=splits, device=torch.device("cpu"), folds_digest=folds_digest(folds)
        )
    consumed, best = 0, -math.inf
    trajectory: list[tuple[int, float]] = []
    trained, pruned, invalid, failed = 0, 0, 0, 0
    started = time.perf_counter()
    while consumed < total_fold_epochs:
        study.optimize(objective, n_trials=1, catch=TRIAL_FAILURES, gc_after_trial=False)
        trial = study.trials[-1]
        spent = fold_epochs_of(trial, method, k)
        if spent == 0:
            invalid += 1  # rejected before training (over max_params): costs no epoch
            if invalid > MAX_REJECTED:
                raise SystemExit(f"--max-params {max_params}: {invalid} sampled models rejected; raise it")
            continue
        trained += 1
        consumed += spent
        if trial.state == optuna.trial.TrialState.PRUNED:
            pruned += 1
        elif trial.state == optuna.trial.TrialState.FAIL:
            failed += 1
        if trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None and math.isfinite(trial.value):
            best = max(best, trial.value)
        trajectory.append((consumed, best))
    return {
        "method": method,
        "seed": seed,
        "trajectory": trajectory,
        "consumed": consumed,
        "trained_trials": trained,
        "pruned_trials": pruned,
        "failed_trials": failed,
        "invalid_trials": invalid,
        "unpruned_fold_epochs": trained * k * epochs,
        "pruning_saved": 1 - consumed / (trained * k * epochs),
        "seconds": time.perf_counter() - started,
    }


def single_split_section(args: Any, data: Any, max_train: int, max_val: int) -> None:
    """TPE + Hyperband against random search without pruning, on the data's own validation split."""
    dataset = _common.load_split(data, max_train=max_train, max_val=max_val)
    info = _common.print_header(
        "search efficiency: TPE + Hyperband vs random search without pruning"
        + (" (--quick: numbers mean nothing)" if args.quick else ""),
        data_label=data.label,
        extra={
            "setup": f"space {SPACE} (max_params {args.max_params}), objective val {OBJECTIVE}, "
            f"{len(dataset.y_train)} train / {len(dataset.y_val)} val windows, {args.budget_epochs} epochs per "
            f"trial, {args.total_epochs} epochs per run, seeds 0..{args.seeds - 1}",
        },
    )
    runs: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        for method in METHODS:
            run = run_search(
                dataset,
                method=method,
                seed=seed,
                epochs=args.budget_epochs,
                total_epochs=args.total_epochs,
                max_params=args.max_params,
            )
            runs.append(run)
            print(
                f"  seed {seed} {method}: {run['trained_trials']} trials trained ({run['pruned_trials']} pruned, "
                f"{run['invalid_trials']} rejected before training), {run['consumed']} epochs, "
                f"best {_fmt(run['trajectory'][-1][1])}, {run['seconds']:.0f} s",
                flush=True,
            )

    contender, baseline = list(METHODS)
    points = [max(1, round(fraction * args.total_epochs)) for fraction in BUDGET_POINTS]
    curve_rows = []
    for method in METHODS:
        row: dict[str, Any] = {"method": method}
        for point in points:
            values = [best_at(r["trajectory"], point) for r in runs if r["method"] == method]
            finite = [v for v in values if math.isfinite(v)]
            row[f"best@{point}ep"] = (
                f"{statistics.mean(finite):.4f}"
                + ("" if len(finite) == len(values) else f" ({len(finite)}/{len(values)})")
                if finite
                else "-"
            )
        same = [r for r in runs if r["method"] == method]
        row["trials"] = sum(r["trained_trials"] for r in same) / len(same)
        row["pruning_saved"] = statistics.mean(r["pruning_saved"] for r in same)
        curve_rows.append(row)
    print("\nbest validation objective (mean over seeds) by epochs consumed:")
    _common.print_table(curve_rows, ["method", *[f"best@{p}ep" for p in points], "trials", "pruning_saved"])

    seed_rows = []
    for seed in range(args.seeds):
        base = next(r for r in runs if r["seed"] == seed and r["method"] == baseline)
        cont = next(r for r in runs if r["seed"] == seed and r["method"] == contender)
        base_best = base["trajectory"][-1][1]
        needed = epochs_to_reach(cont["trajectory"], base_best) if math.isfinite(base_best) else None
        fraction = needed / base["consumed"] if needed is not None else None
        seed_rows.append(
            {
                "seed": seed,
                "baseline_best": _fmt(base_best),
                "baseline_epochs": base["consumed"],
                "contender_best": _fmt(cont["trajectory"][-1][1]),
                "contender_epochs_to_baseline_best": needed if needed is not None else "not reached",
                "fraction": f"{fraction:.2f}" if fraction is not None else "-",
                "verdict": "quick run"
                if args.quick
                else _common.verdict(fraction, TARGET_FRACTION, higher_is_better=False),
            }
        )
    print(f"\nepochs the contender needs to reach the baseline's final best (target <= {TARGET_FRACTION:.2f}):")
    _common.print_table(seed_rows, list(seed_rows[0]))
    saved = statistics.mean(r["pruning_saved"] for r in runs if r["method"] == contender)
    print(f"\npruning saved {saved:.0%} of the epochs the contender's trials would have trained unpruned")

    _common.write_json(
        args.json,
        "search_efficiency",
        [
            *({**r, "kind": "run", "quick": args.quick} for r in runs),
            *({**r, "kind": "seed", "quick": args.quick} for r in seed_rows),
        ],
        info,
    )


def cv_section(args: Any, data: Any, max_train: int, max_val: int) -> None:
    """(A) lockstep + Hyperband, (B) Wilcoxon across folds, (C) no pruning, under patient-grouped K-fold CV."""
    import torch

    from search.data import dataset_folds, fold_datasets, load_dataset

    k, epochs = args.cv, args.cv_epochs
    total = args.cv_total_epochs or CV_UNPRUNED_TRIALS * k * epochs
    # The pooled train+val windows of a stratified slice of DS1, folded as `start --cv K` folds them
    # (seeded with the study seed 0) and normalised per fold as every worker does (search.optimize.splits).
    pool = load_dataset(data.folder).subset(max_train=max_train, max_val=max_val, max_test=2, seed=0)
    folds = dataset_folds(pool, k, 0).tolist()
    splits = [fold.normalised()[0].to(torch.device("cpu")) for fold in fold_datasets(pool, folds)]
    earliest = earliest_wilcoxon_prune(k, args.wilcoxon_p, n_startup_steps=2)
    info = _common.print_header(
        f"search efficiency under {k}-fold patient-grouped CV: lockstep + Hyperband vs Wilcoxon across folds "
        "vs no pruning" + (" (--quick: numbers mean nothing)" if args.quick else ""),
        data_label=data.label + ("" if pool.has_groups else " (NO patient ids: every window its own patient)"),
        extra={
            "setup": f"space {SPACE} (max_params {args.max_params}), objective CV {OBJECTIVE} (selection "
            f"{CV_SELECTION} {CV_SELECTION_WINDOW}), {len(folds)} train+val windows of "
            f"{len(set(pool.groups('train').tolist()) | set(pool.groups('val').tolist())) if pool.has_groups else '?'}"
            f" patients in {k} folds ({', '.join(str(len(split.y_val)) for split in splits)} held out), "
            f"{epochs} epochs per fold, {total} fold-epochs per run (= {total / (k * epochs):g} unpruned "
            f"trials), TPE seeds 0..{args.seeds - 1}",
            "pruners": f"(A) HyperbandPruner(min 1, max {epochs}, factor 3) on the mean over folds per epoch; "
            f"(B) WilcoxonPruner(p_threshold={args.wilcoxon_p}, n_startup_steps=2) on per-fold values; "
            + (
                f"the signed-rank test can reach p < {args.wilcoxon_p} after {earliest} of {k} folds at the earliest"
                if earliest is not None
                else f"the signed-rank test cannot reach p < {args.wilcoxon_p} before the last of {k} folds "
                f"(p >= 2^-n on n folds): (B) can never prune here"
            ),
        },
    )
    if not args.quick:  # torch's first epochs in a process run several times slower: keep that out of (A)'s wall time
        warm_up(splits[0])
    runs: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        for method in CV_METHODS:
            run = run_cv_search(
                pool,
                folds,
                splits,
                method=method,
                seed=seed,
                k=k,
                epochs=epochs,
                total_fold_epochs=total,
                max_params=args.max_params,
                wilcoxon_p=args.wilcoxon_p,
            )
            runs.append(run)
            print(
                f"  seed {seed} {method}: {run['trained_trials']} trials trained ({run['pruned_trials']} pruned, "
                f"{run['failed_trials']} failed, {run['invalid_trials']} rejected before training), "
                f"{run['consumed']} fold-epochs, best {_fmt(run['trajectory'][-1][1])}, {run['seconds']:.0f} s",
                flush=True,
            )

    points = [max(1, round(fraction * total)) for fraction in CV_BUDGET_POINTS]
    rows = []
    for method in CV_METHODS:
        same = [r for r in runs if r["method"] == method]
        row: dict[str, Any] = {"method": method}
        row["trials"] = statistics.mean(r["trained_trials"] for r in same)
        row["pruned"] = statistics.mean(r["pruned_trials"] for r in same)
        row["fold_epochs"] = statistics.mean(r["consumed"] for r in same)
        row["saved_vs_unpruned"] = f"{statistics.mean(r['pruning_saved'] for r in same):.0%}"
        for fraction, point in zip(CV_BUDGET_POINTS, points, strict=True):
            values = [best_at(r["trajectory"], point) for r in same]
            finite = [v for v in values if math.isfinite(v)]
            row[f"best@{fraction:.0%}"] = (
                f"{statistics.mean(finite):.4f}"
                + ("" if len(finite) == len(values) else f" ({len(finite)}/{len(values)})")
                if finite
                else "-"
            )
        row["wall_s"] = statistics.mean(r["seconds"] for r in same)
        rows.append(row)
    print(f"\nmean over seeds; best@X = best CV {OBJECTIVE} of trials completed within X of the fold-epoch budget:")
    _common.print_table(
        rows,
        [
            "method",
            "trials",
            "pruned",
            "fold_epochs",
            "saved_vs_unpruned",
            *[f"best@{f:.0%}" for f in CV_BUDGET_POINTS],
            "wall_s",
        ],
    )
    print(cv_conclusion(runs, total))
    _common.write_json(
        args.json,
        "search_efficiency_cv",
        [{**r, "kind": "cv_run", "k": k, "quick": args.quick} for r in runs],
        info,
    )


def warm_up(split: Any) -> None:
    """One epoch of the default cnn, untimed, before the first contender."""
    import ecgmodels
    from search.training.config import TrainConfig
    from search.training.loop import TrainingRun

    model = ecgmodels.build("cnn", n_channels=split.n_channels, seq_len=split.seq_len)
    TrainingRun(model, split, TrainConfig(epochs=1), autoencoder=False).step()


def cv_conclusion(runs: list[dict[str, Any]], total: int) -> str:
    """One line, every ratio from this run: work done per unpruned work, best values at the same budget."""
    (a, b, c) = CV_METHODS

    def mean(method: str, key: str) -> float:
        return statistics.mean(r[key] for r in runs if r["method"] == method)

    def trained_share(method: str) -> float:  # fold-epochs trained per fold-epoch its trials would cost unpruned
        return mean(method, "consumed") / mean(method, "unpruned_fold_epochs")

    def best(method: str, budget: float) -> str:
        values = [best_at(r["trajectory"], budget) for r in runs if r["method"] == method]
        finite = [v for v in values if math.isfinite(v)]
        return f"{statistics.mean(finite):.4f}" if finite else "-"

    return (
        f"conclusion: lockstep+hyperband trained {trained_share(a):.0%} of its trials' unpruned fold-epochs "
        f"({mean(a, 'trained_trials'):.1f} trials in the budget), wilcoxon {trained_share(b):.0%} "
        f"({mean(b, 'trained_trials'):.1f} trials), no pruning 100% ({mean(c, 'trained_trials'):.1f} trials); "
        f"best CV {OBJECTIVE} at 50% / 100% of {total} fold-epochs: {a.split()[0]} {best(a, total / 2)} / "
        f"{best(a, total)}, {b.split()[0]} {best(b, total / 2)} / {best(b, total)}, {c.split()[0]} "
        f"{best(c, total / 2)} / {best(c, total)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--subset", default="400,200", metavar="TRAIN,VAL", help="training,validation windows")
    parser.add_argument("--seeds", type=int, default=3, help="seeds (runs per method)")
    parser.add_argument("--budget-epochs", type=int, default=6, help="epoch budget per trial")
    parser.add_argument("--total-epochs", type=int, default=48, help="epoch budget per search run")
    parser.add_argument("--max-params", type=int, default=50_000, help="cap on model parameters (CPU-feasible)")
    parser.add_argument(
        "--cv",
        type=int,
        default=0,
        metavar="K",
        help="instead: pruning under patient-grouped K-fold CV over the pooled train+val of --subset (issue 14)",
    )
    parser.add_argument("--cv-epochs", type=int, default=4, help="--cv: epochs per fold of a trial")
    parser.add_argument(
        "--cv-total-epochs",
        type=int,
        default=None,
        metavar="N",
        help=f"--cv: fold-epochs per search run (default {CV_UNPRUNED_TRIALS} unpruned trials: "
        f"{CV_UNPRUNED_TRIALS} x K x --cv-epochs)",
    )
    parser.add_argument("--wilcoxon-p", type=float, default=0.1, help="--cv: p_threshold of (B) (Optuna's default)")
    args = parser.parse_args(argv)
    if args.quick:  # both sections at toy sizes, so CI runs both paths
        args.subset, args.seeds, args.budget_epochs, args.total_epochs, args.max_params = "32,32", 1, 2, 6, 20_000
        # CV: 2 folds, one epoch, one trial's worth of fold-epochs per contender (CI's ~30 s)
        args.cv, args.cv_epochs, args.cv_total_epochs = args.cv or 2, 1, args.cv or 2
    try:
        max_train, max_val = (int(part) for part in args.subset.split(","))
    except ValueError:
        parser.error(f"--subset {args.subset!r}: expected TRAIN,VAL window counts, e.g. 400,200")
    if min(max_train, max_val, args.seeds, args.budget_epochs, args.total_epochs, args.cv_epochs) < 1:
        parser.error("--subset, --seeds, --budget-epochs, --total-epochs and --cv-epochs must be positive")
    if args.cv == 1 or args.cv < 0:
        parser.error(f"--cv {args.cv}: expected at least 2 folds (or 0: the single-split comparison)")
    if not 0 < args.wilcoxon_p <= 1:
        parser.error(f"--wilcoxon-p {args.wilcoxon_p}: expected a p-value threshold in (0, 1]")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # rejected models fail loudly at WARNING
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    data = _common.prepared_data()
    if args.quick or not args.cv:
        single_split_section(args, data, max_train, max_val)
    if args.cv:
        if args.quick:
            print()
        cv_section(args, data, max_train, max_val)
    return 0


if __name__ == "__main__":
    sys.exit(main())
