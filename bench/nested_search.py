"""Does the search's pick beat its own starting point on patients the search never saw? A nested search.

`bench/quality.py` reads the test split once, so it cannot say why a pick with the best CV figure of any
run transferred worse than a plainer one: every choice the search makes is made on the same training
patients, and its CV figure is the maximum over many trials on them. This bench repeats the whole
pipeline inside the training data: outer patient-grouped folds hold patients out; on the rest,
`ecgsearch start --cv K` searches with the budget of `bench/quality.py`'s (b) in a shorter box, and
`ecgsearch retrain` exports (its default under `--cv`: the fold models) of

  (i)   the pick (the best trial),
  (ii)  the second starting point (trial 1: the `cnn` defaults with the rhythm branch, `average`
        fusion, record-relative where the data has patient ids), the search's own plain candidate,
  (iii) the top 3 trials' exports averaged (their mean score, the cut by the one rule on training windows),
  (iv)  what `retrain` exports by default (`--select confirmed`): the space's recommended starting point (trial
        1) unless the pick's per-fold lead over it passes a one-sided paired t-test at p < 0.05
        (`studies.select_export`),

each scored once on the held-out patients, beside the inner CV figure that chose it. The test split of
the data is never read: the held-out patients are training patients.

    python bench/nested_search.py                        # MIT-BIH DS1: 3 outer folds, a 12-minute box each
    python bench/nested_search.py --box-minutes 20       # a longer search per outer fold
    python bench/nested_search.py --data DIR             # any six-file dataset with patient ids
    python bench/nested_search.py --quick                # a tiny slice (CI)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path
from fold_ensemble import design_and_held_out, training_window_cut
from quality import QUICK_SEARCH, SEARCH, default_flops

from studies import paired_lead_t, select_export

OUTER, INNER, BOX_MINUTES, TOP = 3, 4, 12.0, 3
STARTING_POINT = 1  # trial 1 of a new classifier study: the cnn defaults with the rhythm branch


def search_data(outer: Any, seed: int, folder: Path) -> Path:
    """The outer fold's training patients as a six-file dataset (train and validation by patient; `start --cv`
    pools them again) with its held-out patients as the test split."""
    from search.data import dataset_folds, fold_datasets

    design = design_and_held_out(outer)
    view = fold_datasets(design, dataset_folds(design, 5, seed))[0]
    return view.save(folder)


def search(data_dir: Path, work: Path, budget: dict[str, Any]) -> tuple[str, Any]:
    """`ecgsearch start --cv K` on the outer fold's training patients: the storage URL and the study."""
    import optuna

    from search.cli import main

    storage = f"sqlite:///{work / 'nested.db'}"
    start = [
        "start", "--space", budget["space"], "--study", "nested", "--data", str(data_dir), "--storage", storage,
        "--mlflow-uri", "off", "--trials", str(budget["trials"]), "--epochs", str(budget["epochs"]),
        "--cv", str(budget["cv"]), "--timeout", str(int(budget["timeout_minutes"] * 60)),
        "--max-params", str(budget["max_params"]), "--max-flops", str(budget["max_flops"]), "--no-progress",
    ]  # fmt: skip
    if main(start) != 0:
        raise RuntimeError(f"ecgsearch {' '.join(start)} failed")
    return storage, optuna.load_study(study_name="nested", storage=storage)


def export(storage: str, trial: int, out: Path) -> dict[str, Any]:
    """`ecgsearch retrain --trial N` as a user runs it (the fold models of a --cv study); its metrics.json."""
    from search.cli import main

    argv = ["retrain", "--study", "nested", "--storage", storage, "--mlflow-uri", "off", "--trial", str(trial)]
    if main([*argv, "--out", str(out)]) != 0:
        raise RuntimeError(f"ecgsearch {' '.join(argv)} failed")
    return json.loads((out / "metrics.json").read_text())


def averaged_exports(bundles: list[Path], data: Any) -> dict[str, float]:
    """Several bundles' mean score on the held-out (test) windows, cut by the one rule: the F1-macro cut on the
    fixed stratified sample of training windows."""
    import numpy as np

    from search.data import all_labelled
    from search.ship.bundle import load_bundle
    from search.training.metrics import classification_metrics

    loaded = [load_bundle(path) for path in bundles]

    def mean_score(X: Any, groups: Any) -> np.ndarray:
        return np.mean([bundle.score(X, groups=groups) for bundle in loaded], axis=0)

    cut = training_window_cut(mean_score, all_labelled(data), seed=0)
    metrics = classification_metrics(data.y_test.numpy(), mean_score(data.X_test, data.groups_test), cut)
    return {"roc_auc": metrics["roc_auc"], "f1_macro": metrics["f1_macro"]}


def held_out(metrics: dict[str, Any]) -> dict[str, float]:
    return {"roc_auc": metrics["test"]["roc_auc"], "f1_macro": metrics["test"]["f1_macro"]}


def one_outer_fold(outer: Any, work: Path, budget: dict[str, Any], *, seed: int) -> dict[str, Any]:
    from search.data import load_dataset

    data_dir = search_data(outer, seed, work / "data")
    started = time.monotonic()
    storage, study = search(data_dir, work, budget)
    minutes = (time.monotonic() - started) / 60
    complete = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value, reverse=True)
    top = complete[:TOP]
    exports = {t.number: export(storage, t.number, work / f"trial-{t.number}") for t in top}
    starting = next((t for t in complete if t.number == STARTING_POINT), None)
    if starting is not None and STARTING_POINT not in exports:
        exports[STARTING_POINT] = export(storage, STARTING_POINT, work / f"trial-{STARTING_POINT}")
    confirmed = select_export(study, "confirmed")
    if confirmed.trial.number not in exports:
        number = confirmed.trial.number
        exports[number] = export(storage, number, work / f"trial-{number}")
    data = load_dataset(data_dir)
    result = {
        "search_minutes": minutes,
        "complete": len(complete),
        "trials": len(study.trials),
        "pick": top[0].number,
        "pick_cv": top[0].value,
        "pick_fold_values": top[0].user_attrs.get("cv_fold_values"),
        "pick_config": top[0].user_attrs.get("config"),
        "top_cv": [t.value for t in top],
        "pick, fold models": held_out(exports[top[0].number]),
        "confirmed_trial": confirmed.trial.number,
        "confirmed_reason": confirmed.reason,
        CONFIRMED: held_out(exports[confirmed.trial.number]),
    }
    if len(top) > 1:  # with one complete trial the average is the pick
        result[TOP_AVERAGED] = averaged_exports([work / f"trial-{t.number}" for t in top], data)
    if starting is not None:
        result["starting_point_cv"] = starting.value
        result["starting_point_fold_values"] = starting.user_attrs.get("cv_fold_values")
        result["paired_lead_t"] = paired_lead_t(
            result["pick_fold_values"] or [], result["starting_point_fold_values"] or []
        )
        result["starting point, fold models"] = held_out(exports[STARTING_POINT])
    return result


TOP_AVERAGED = f"top {TOP} averaged"  # fewer where fewer trials completed: `top_cv` says how many
CONFIRMED = "retrain --select confirmed"
CONTENDERS = ("pick, fold models", "starting point, fold models", TOP_AVERAGED, CONFIRMED)


def main(argv: list[str] | None = None) -> int:
    def options(parser: Any) -> None:
        parser.add_argument("--fold-seed", type=int, default=0, help="seed of the outer folds (default 0)")
        parser.add_argument("--box-minutes", type=float, default=BOX_MINUTES, help="search time box per outer fold")

    bench = _common.fold_bench(
        __doc__.splitlines()[0], argv, folds=OUTER, epochs=SEARCH["epochs"], more_options=options
    )
    from search.data import dataset_folds, fold_datasets

    args, dataset = bench.args, bench.dataset
    outer_k = 2 if args.quick else OUTER
    budget = dict(QUICK_SEARCH if args.quick else SEARCH)
    budget.update(cv=2 if args.quick else INNER, epochs=bench.epochs)
    if not args.quick:
        budget["timeout_minutes"] = args.box_minutes
    budget["max_flops"] = budget["max_flops_over_default"] * default_flops(dataset)
    info = _common.print_header(
        "the search's pick against its starting point on patients it never saw (nested search)"
        + (" (--quick)" if args.quick else ""),
        data_label=bench.label,
        extra={"outer folds": outer_k, "fold seed": args.fold_seed, "search per outer fold": budget},
    )
    outer_folds = dataset_folds(dataset, outer_k, args.fold_seed)
    per_fold = []
    with tempfile.TemporaryDirectory(prefix="ecgsearch-nested-") as tmp:
        for index, outer in enumerate(fold_datasets(dataset, outer_folds)):
            work = Path(tmp) / f"outer-{index}"
            work.mkdir()
            result = one_outer_fold(outer, work, budget, seed=args.fold_seed)
            per_fold.append(result)
            cells = " · ".join(
                f"{name}: {result[name]['roc_auc']:.3f} / {result[name]['f1_macro']:.3f}"
                for name in CONTENDERS
                if name in result
            )
            print(
                f"outer fold {index + 1}: {result['complete']} of {result['trials']} trials complete in "
                f"{result['search_minutes']:.1f} min; pick trial {result['pick']} (inner CV {result['pick_cv']:.3f}), "
                f"starting point inner CV {result.get('starting_point_cv', float('nan')):.3f} "
                f"(paired lead t = {result.get('paired_lead_t')}); "
                f"--select confirmed: trial {result['confirmed_trial']} · {cells}",
                flush=True,
            )
    rows = []
    for name in CONTENDERS:
        folds = [fold[name] for fold in per_fold if name in fold]
        if not folds:
            continue
        rows.append({
            "export": name,
            "outer folds": len(folds),
            "held-out ROC-AUC (mean)": statistics.fmean(f["roc_auc"] for f in folds),
            "held-out F1 macro (mean)": statistics.fmean(f["f1_macro"] for f in folds),
            "ROC-AUC per outer fold": " / ".join(f"{f['roc_auc']:.3f}" for f in folds),
            "F1 per outer fold": " / ".join(f"{f['f1_macro']:.3f}" for f in folds),
        })  # fmt: skip
    print()
    _common.print_table(rows, list(rows[0]))
    for name in ("pick, fold models", TOP_AVERAGED, CONFIRMED):
        paired = [fold for fold in per_fold if "starting point, fold models" in fold and name in fold]
        if not paired:
            continue
        gain = [fold[name]["roc_auc"] - fold["starting point, fold models"]["roc_auc"] for fold in paired]
        cv_gain = [fold["pick_cv"] - fold["starting_point_cv"] for fold in paired]
        print(
            f"{name} − starting point, held-out ROC-AUC: {statistics.fmean(gain):+.3f} "
            f"(per outer fold {' / '.join(f'{g:+.3f}' for g in gain)}); the pick's inner CV lead "
            f"{statistics.fmean(cv_gain):+.3f}"
        )
    _common.write_json(args.json, "nested_search", [*rows, {"per_fold": per_fold}], info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
