"""Search efficiency: default ecgsearch (TPE + Hyperband pruning) against random search without pruning.

Both run the real trial objective (`search.optimize.objective.TrialObjective`: sample from the `cnn` space, build,
`fit`, report every epoch, prune) in in-memory Optuna studies, on the real MIT-BIH DS1 training and
validation windows (never the test split), with the same epoch budget per trial, the same total epoch
budget per run and the same seeds. A run stops starting trials once its total budget is consumed.

Reported: the best validation objective (of completed trials: what `study.best_value` and `retrain`
use) at a few points of the epoch budget; per seed, the epochs the contender needs to reach the
baseline's final best (target: at most 1/3 of the baseline's epochs); the fraction of epochs pruning
saved (1 - epochs trained / epochs its trials would have trained unpruned).
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


def main(argv: list[str] | None = None) -> int:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--subset", default="400,200", metavar="TRAIN,VAL", help="training,validation windows")
    parser.add_argument("--seeds", type=int, default=3, help="seeds (runs per method)")
    parser.add_argument("--budget-epochs", type=int, default=6, help="epoch budget per trial")
    parser.add_argument("--total-epochs", type=int, default=48, help="epoch budget per search run")
    parser.add_argument("--max-params", type=int, default=50_000, help="cap on model parameters (CPU-feasible)")
    args = parser.parse_args(argv)
    if args.quick:
        args.subset, args.seeds, args.budget_epochs, args.total_epochs, args.max_params = "32,32", 1, 2, 6, 20_000
    try:
        max_train, max_val = (int(part) for part in args.subset.split(","))
    except ValueError:
        parser.error(f"--subset {args.subset!r}: expected TRAIN,VAL window counts, e.g. 400,200")
    if min(max_train, max_val, args.seeds, args.budget_epochs, args.total_epochs) < 1:
        parser.error("--subset, --seeds, --budget-epochs and --total-epochs must be positive")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # rejected models fail loudly at WARNING
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    data = _common.prepared_data()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
