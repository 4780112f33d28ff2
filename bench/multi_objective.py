"""What a multi-objective study costs: every trial trained to the end vs a single objective with Hyperband.

Optuna prunes no multi-objective trial (`Trial.report` is refused), and ecgsearch does not prune on the
quality objective alone either: that would stop the cheap, slightly less accurate models a front is for.
So a multi-objective study trains every epoch of every trial, and measures each model's costs before it
trains. This runs, in one process, on the same data, the same space, the same budget and the same seed,
`ecgsearch start` with `--objective roc_auc` (Hyperband pruning) and with `--objectives
roc_auc,params,flops,latency_ms`, and prints the epochs trained, the wall time, and the front's size.
The configs proposed differ between runs (each worker seeds its sampler with its own identity), so
read the epochs per trial rather than the totals.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common


def run(data_dir: Path, folder: Path, *, objectives: str | None, trials: int, epochs: int, seed: int) -> dict:
    import optuna

    from search.cli import main
    from studies import open_storage, pareto_front

    storage = f"sqlite:///{folder / 'study.db'}"
    how = ["--objectives", objectives] if objectives else ["--objective", "roc_auc", "--pruner", "hyperband"]
    argv = ["start", "--space", "cnn", "--study", "s", "--data", str(data_dir), "--storage", storage]
    argv += ["--mlflow-uri", "off", "--no-progress", "--trials", str(trials), "--epochs", str(epochs)]
    argv += ["--max-params", "60000", "--seed", str(seed), *how]
    started = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"ecgsearch {' '.join(argv)} failed")
    seconds = time.perf_counter() - started
    study = optuna.load_study(study_name="s", storage=open_storage(storage))
    trained = [t for t in study.get_trials() if t.state.is_finished() and t.user_attrs.get("history")]
    epochs_trained = sum(len(t.user_attrs["history"]) for t in trained)
    return {
        "study": "multi-objective" if objectives else "single (hyperband)",
        "seed": seed,
        "trials trained": len(trained),
        "epochs trained": epochs_trained,
        "epochs per trial": epochs_trained / max(1, len(trained)),
        "seconds": seconds,
        "front size": len(pareto_front(study)) if objectives else 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="trial budget per study")
    parser.add_argument("--epochs", type=int, default=6, help="epoch budget per trial")
    parser.add_argument("--seeds", type=int, default=2, help="studies per kind")
    parser.add_argument("--subset", default="200,100", metavar="TRAIN,VAL", help="training,validation windows")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.seeds, args.subset = 2, 1, 1, "32,32"
    max_train, max_val = (int(part) for part in args.subset.split(","))
    data = _common.prepared_data()
    info = _common.print_header(
        "multi-objective cost: no pruning, costs measured, vs single objective with Hyperband"
        + (" (--quick: numbers mean nothing)" if args.quick else ""),
        data_label=data.label,
        extra={"trials": args.trials, "epochs": args.epochs, "subset": args.subset, "space": "cnn"},
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="ecgsearch-bench-mo-") as temp:
        subset = _common.load_split(data, max_train=max_train, max_val=max_val, max_test=8)
        data_dir = _common.save_subset(subset, Path(temp) / "data")
        for seed in range(args.seeds):
            for objectives in (None, "roc_auc,params,flops,latency_ms"):
                folder = Path(temp) / f"{seed}-{bool(objectives)}"
                folder.mkdir()
                rows.append(
                    run(data_dir, folder, objectives=objectives, trials=args.trials, epochs=args.epochs, seed=seed)
                )
    _common.print_table(rows, list(rows[0]))
    for kind in ("single (hyperband)", "multi-objective"):
        mine = [r for r in rows if r["study"] == kind]
        print(
            f"{kind}: {statistics.mean(r['epochs per trial'] for r in mine):.2f} epochs per trial, "
            f"{statistics.mean(r['seconds'] for r in mine):.0f} s per study"
        )
    _common.write_json(args.json, "multi_objective", [{**r, "quick": args.quick} for r in rows], info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
