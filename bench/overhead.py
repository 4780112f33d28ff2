"""Per-trial overhead: seconds a worker spends outside training (storage round trips, heartbeats, MLflow
mirroring, model build, sampling), with 1, 2 and 4 workers, on SQLite and on PostgreSQL.

Runs the real commands as subprocesses: `ecgsearch start --create-only` (study + MLflow experiment in a
local SQLite MLflow store), then `ecgsearch worker --workers N` (the launcher's N worker processes), on a
small real slice with 1 epoch per trial. From the study it then computes, per worker (user attr
`worker_pid`), for each pair of consecutive trials: start-to-next-start wall time minus the time spent
inside training (the sum of `epoch_seconds` in the trial's `history`). Process start-up is not counted:
a long-lived worker pays it once.

Baseline, measured in the same run on the same storage backend: a bare Optuna `study.optimize` (same
sampler, pruner and heartbeat storage) with a trivial objective that samples a few parameters and reports one
value per epoch. `vs_bare_optuna` is the worker's per-trial overhead divided by that bare per-trial time: what
ecgsearch adds around a trial (model build, user attributes, budget checks, MLflow mirror) in units of what
Optuna's own storage round trips cost.

`--storages proxy` runs the same on PostgreSQL behind a real `ecgsearch storage-proxy` (workers get
`grpc://…`). `vs_2026_11_23` divides by the median recorded before issue 12's cuts (bench/RESULTS.md).

Targets: <= 0.3 s per trial and <= 1% of a 1-minute trial, on PostgreSQL with 4 workers.
PostgreSQL (127.0.0.1:5432, user postgres, trust auth) gets a fresh database `ecgsearch_bench_<uuid>`,
dropped afterwards; it is skipped with a message when unreachable.
"""

from __future__ import annotations

import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path

PG_HOST = os.environ.get("ECGSEARCH_BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ECGSEARCH_BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("ECGSEARCH_BENCH_PG_USER", "postgres")
TARGET_SECONDS = 0.3
TARGET_FRACTION = 0.01
TYPICAL_TRIAL_S = 60.0
# Median per-trial overhead (s) measured on 2026-11-23 before issue 12's cuts (bench/RESULTS.md section 4),
# the "today" the issue asks a ratio against; a recorded figure from another day and load, not this run's.
RECORDED_2026_11_23 = {("sqlite", 1): 0.48, ("sqlite", 2): 1.00, ("sqlite", 4): 1.48,
                       ("postgresql", 1): 0.68, ("postgresql", 2): 1.20, ("postgresql", 4): 1.10}  # fmt: skip
STUDY = "overhead"


def postgres_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1.0):
            return True
    except OSError:
        return False


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database for one measurement, dropped afterwards whatever happens."""
    import psycopg

    name = f"ecgsearch_bench_{uuid.uuid4().hex[:16]}"

    def admin() -> Any:
        return psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=5
        )

    with admin() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def sqlite_database(folder: Path) -> Iterator[str]:
    yield f"sqlite:///{folder / 'study.db'}"


def cli(args: list[str], *, cwd: Path, storage_url: str, profile_to: Path | None = None) -> float:
    """Run `ecgsearch ARGS` in `cwd`; the storage URL travels in the environment, as the launcher does it."""
    env = {**os.environ, "ECGSEARCH_STORAGE": storage_url, "PYTHONPATH": str(_common.REPO_ROOT)}
    prefix = [sys.executable]
    if profile_to is not None:
        prefix += ["-m", "cProfile", "-o", str(profile_to)]
    command = [*prefix, "-m", "search.cli", *args]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(
            f"`ecgsearch {' '.join(args)}` exited {completed.returncode}:\n{completed.stdout[-3000:]}"
            f"\n{completed.stderr[-3000:]}"
        )
    return time.perf_counter() - started


def bare_optuna_seconds(storage_url: str, *, trials: int, epochs: int) -> float:
    """Seconds per trial of a bare `study.optimize` with a trivial objective on this storage (the baseline)."""
    import optuna

    from studies import make_pruner, make_sampler, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = optuna.create_study(
        study_name="bare",
        storage=open_storage(storage_url),
        direction="maximize",
        sampler=make_sampler("tpe", seed=0),
        pruner=make_pruner("hyperband", max_epochs=max(epochs, 1)),
    )

    def objective(trial: optuna.Trial) -> float:
        value = sum(trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(6)) / 6
        for epoch in range(1, epochs + 1):
            trial.report(value, epoch)
        return value

    started = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return (time.perf_counter() - started) / trials


def trial_overheads(storage_url: str) -> dict[str, Any]:
    """Start-to-next-start minus training, per pair of consecutive trials of one worker process."""
    import optuna

    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    by_worker: dict[Any, list[Any]] = {}
    for trial in study.get_trials(deepcopy=False):
        if trial.datetime_start is None or trial.datetime_complete is None:
            continue
        by_worker.setdefault(trial.user_attrs.get("worker_pid"), []).append(trial)
    gaps, inside, between, training = [], [], [], []
    for trials in by_worker.values():
        trials.sort(key=lambda t: t.datetime_start)
        for current, following in itertools.pairwise(trials):
            train_s = sum(entry.get("epoch_seconds", 0.0) for entry in current.user_attrs.get("history") or [])
            span = (following.datetime_start - current.datetime_start).total_seconds()
            gaps.append(span - train_s)
            inside.append((current.datetime_complete - current.datetime_start).total_seconds() - train_s)
            between.append((following.datetime_start - current.datetime_complete).total_seconds())
            training.append(train_s)
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    return {
        "pairs": len(gaps),
        "overhead_s": statistics.median(gaps) if gaps else float("nan"),
        "overhead_mean_s": statistics.mean(gaps) if gaps else float("nan"),
        "inside_trial_s": statistics.median(inside) if inside else float("nan"),
        "between_trials_s": statistics.median(between) if between else float("nan"),
        "training_s": statistics.median(training) if training else float("nan"),
        "states": states,
    }


def measure(
    backend: str, workers: int, *, data_dir: Path, trials: int, epochs: int, max_params: int, quick: bool
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ecgsearch-bench-overhead-") as tmp:
        folder = Path(tmp)
        with backend_storage(backend, folder) as (storage_url, database_url):
            mlflow_uri = f"sqlite:///{folder / 'mlflow.db'}"
            common = ["--study", STUDY, "--mlflow-uri", mlflow_uri]
            start = [
                "start", "--space", "cnn", "--data", str(data_dir), "--trials", str(trials), "--epochs", str(epochs),
                "--max-params", str(max_params), "--seed", "0", *common,
            ]  # fmt: skip
            if quick:  # one process creates the study and runs it: one start-up fewer
                wall = cli([*start, "--workers", "1", "--device", "cpu", "--no-progress"], cwd=folder,
                           storage_url=storage_url)  # fmt: skip
            else:
                cli([*start, "--create-only"], cwd=folder, storage_url=storage_url)
                wall = cli(
                    ["worker", *common, "--workers", str(workers), "--device", "cpu", "--no-progress"],
                    cwd=folder,
                    storage_url=storage_url,
                )
            result = trial_overheads(database_url)
    with backend_storage(backend, None) as (baseline_url, _database_url):
        result["bare_optuna_s"] = bare_optuna_seconds(baseline_url, trials=max(trials, 10), epochs=epochs)
    result.update(storage=backend, workers=workers, trials_budget=trials, epochs=epochs, wall_s=wall)
    result["fraction_of_1min"] = result["overhead_s"] / TYPICAL_TRIAL_S
    result["vs_bare_optuna"] = result["overhead_s"] / result["bare_optuna_s"]
    recorded = RECORDED_2026_11_23.get((backend if backend != "proxy" else "postgresql", workers))
    result["vs_2026_11_23"] = result["overhead_s"] / recorded if recorded and not quick else float("nan")
    return result


@contextmanager
def backend_storage(backend: str, folder: Path | None) -> Iterator[tuple[str, str]]:
    """(the URL the workers get, the database URL the results are read from): SQLite in `folder` (a fresh
    folder when None), a fresh PostgreSQL database, or one behind a real `ecgsearch storage-proxy`."""
    if backend == "sqlite":
        with sqlite_database(folder) if folder is not None else _fresh_sqlite() as url:
            yield url, url
        return
    with postgres_database() as database_url:
        if backend == "proxy":
            with _common.storage_proxy(database_url) as (proxy_url, _pid):
                yield proxy_url, database_url
        else:
            yield database_url, database_url


@contextmanager
def _fresh_sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="ecgsearch-bench-bare-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'bare.db'}"


def profile_worker(data_dir: Path, *, backend: str, trials: int, epochs: int, max_params: int) -> None:
    """cProfile one worker process and print where its non-training time goes."""
    import pstats

    with tempfile.TemporaryDirectory(prefix="ecgsearch-bench-profile-") as tmp:
        folder = Path(tmp)
        database = postgres_database() if backend == "postgresql" else sqlite_database(folder)
        with database as storage_url:
            common = ["--study", STUDY, "--mlflow-uri", f"sqlite:///{folder / 'mlflow.db'}"]
            cli(
                ["start", "--space", "cnn", "--data", str(data_dir), "--trials", str(trials), "--epochs",
                 str(epochs), "--max-params", str(max_params), "--create-only", *common],
                cwd=folder, storage_url=storage_url,
            )  # fmt: skip
            out = folder / "worker.prof"
            cli(["worker", *common, "--device", "cpu", "--no-progress"], cwd=folder, storage_url=storage_url,
                profile_to=out)  # fmt: skip
            stats = pstats.Stats(str(out))
    print(f"\n-- cProfile of one `ecgsearch worker` on {backend} ({trials} trials, {epochs} epoch(s) each)")
    print("   cumulative seconds of the calls that make up a trial's overhead:")
    wanted = (
        ("search/training/loop.py", "fit"),
        ("search/optimize/worker.py", "_optimize_one"),
        ("search/optimize/worker.py", "load_study_data"),
        ("search/optimize/objective.py", "__call__"),
        ("search/optimize/objective.py", "_prepare"),
        ("search/optimize/objective.py", "_check_budget"),
        ("search/optimize/objective.py", "_validate"),
        ("search/optimize/objective.py", "_finish"),
        ("search/optimize/objective.py", "on_epoch"),
        ("search/tracking/mirror.py", "trial_changed"),
        ("search/tracking/mirror.py", "close"),
        ("search/tracking/mirror.py", "__init__"),
        ("spaces/registry.py", "build_model"),
        ("spaces/registry.py", "__call__"),
        ("ecgmodels/registry.py", "build"),
        ("studies/trials.py", "count_trials"),
        ("studies/trials.py", "trials_used"),
        ("optuna/storages/_heartbeat.py", "fail_stale_trials"),
        ("optuna/trial/_trial.py", "report"),
        ("optuna/trial/_trial.py", "should_prune"),
        ("optuna/trial/_trial.py", "set_user_attr"),
        ("optuna/study/study.py", "ask"),
        ("optuna/study/_tell.py", "_tell_with_warning"),
    )
    rows = []
    for (path, _line, name), (_cc, ncalls, _tt, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for suffix, function in wanted:
            if path.endswith(suffix) and name == function:
                rows.append({"function": f"{suffix}:{name}", "calls": ncalls, "cumulative_s": cumulative})
    rows.sort(key=lambda row: -row["cumulative_s"])
    _common.print_table(rows, ["function", "calls", "cumulative_s"])
    print("\n   top 25 by cumulative time:")
    stats.sort_stats("cumulative").print_stats(25)


def verdict(row: dict[str, Any], *, quick: bool) -> str:
    """The targets hold for PostgreSQL with 4 workers; other rows are context."""
    if quick:
        return "quick run"
    if row["storage"] not in ("postgresql", "proxy") or row["workers"] != 4:
        return "-"
    met = row["overhead_s"] <= TARGET_SECONDS and row["fraction_of_1min"] <= TARGET_FRACTION
    return "met" if met else "MISSED"


def print_results(rows: list[dict[str, Any]]) -> None:
    print()
    _common.print_table(
        rows,
        ["storage", "workers", "pairs", "training_s", "overhead_s", "overhead_mean_s", "inside_trial_s",
         "between_trials_s", "bare_optuna_s", "vs_bare_optuna", "vs_2026_11_23", "fraction_of_1min", "verdict"],
    )  # fmt: skip
    print(
        f"\noverhead_s: median over consecutive trial pairs of one worker of (next start - start - training); "
        f"target <= {TARGET_SECONDS} s and <= {TARGET_FRACTION:.0%} of a {TYPICAL_TRIAL_S:.0f} s trial "
        "on PostgreSQL with 4 workers\nvs_bare_optuna: overhead_s / the per-trial seconds of a bare Optuna "
        "study.optimize (trivial objective, same storage backend, same sampler and pruner) measured in this run"
        "\nvs_2026_11_23: overhead_s / the median recorded for the same storage and workers on 2026-11-23, before "
        "issue 12's cuts (proxy rows against PostgreSQL's); another day and load, so only a rough ratio"
    )


def parse_args(argv: list[str] | None) -> tuple[Any, list[int], list[str], int, int]:
    """The arguments, the worker counts, the storage backends and the slice sizes (--quick shrinks them)."""
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts to compare")
    parser.add_argument(
        "--storages",
        default="sqlite,postgresql,proxy",
        help="sqlite, postgresql and/or proxy (PostgreSQL behind `ecgsearch storage-proxy`)",
    )
    parser.add_argument("--trials-per-worker", type=int, default=6, help="trial budget per worker (full mode)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial")
    parser.add_argument("--max-params", type=int, default=200_000, help="cap on model size")
    parser.add_argument("--subset", default="32,16", metavar="TRAIN,VAL", help="windows of the small real slice")
    parser.add_argument("--profile", action="store_true", help="also cProfile one worker and print the breakdown")
    args = parser.parse_args(argv)
    worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]
    backends = [b.strip() for b in args.storages.split(",") if b.strip()]
    unknown = sorted(set(backends) - {"sqlite", "postgresql", "proxy"})
    if unknown:
        parser.error(f"--storages: unknown {', '.join(unknown)}; expected sqlite, postgresql and/or proxy")
    max_train, max_val = (int(part) for part in args.subset.split(","))
    if args.quick:
        worker_counts, backends, args.trials_per_worker, max_train, max_val = [1], ["sqlite"], 2, 16, 16
    return args, worker_counts, backends, max_train, max_val


def main(argv: list[str] | None = None) -> int:
    args, worker_counts, backends, max_train, max_val = parse_args(argv)
    notes = []
    if {"postgresql", "proxy"} & set(backends) and not postgres_reachable():
        backends = [backend for backend in backends if backend == "sqlite"]
        notes.append(
            f"PostgreSQL skipped: nothing answers on {PG_HOST}:{PG_PORT} (start it, e.g. `pg_ctlcluster 15 main "
            "start`, or set ECGSEARCH_BENCH_PG_HOST/PORT)"
        )
    data = _common.prepared_data()
    with tempfile.TemporaryDirectory(prefix="ecgsearch-bench-slice-") as slice_tmp:
        data_dir = Path(slice_tmp) / "data"
        _common.load_split(data, max_train=max_train, max_val=max_val, max_test=4).save(data_dir)
        info = _common.print_header(
            "overhead: per-trial seconds outside training" + (" (--quick: numbers mean nothing)" if args.quick else ""),
            data_label=data.label,
            extra={
                "setup": f"space cnn (max_params {args.max_params}), {max_train} train / {max_val} val windows, "
                f"{args.epochs} epoch(s) per trial, {args.trials_per_worker} trials per worker, MLflow mirror to a "
                "local SQLite store, TPE + Hyperband, real `ecgsearch start --create-only` + `ecgsearch worker "
                "--workers N` processes",
                **({"note": "; ".join(notes)} if notes else {}),
            },
        )
        rows = []
        for backend in backends:
            for workers in worker_counts:
                row = measure(
                    backend,
                    workers,
                    data_dir=data_dir,
                    trials=args.trials_per_worker * workers,
                    epochs=args.epochs,
                    max_params=args.max_params,
                    quick=args.quick,
                )
                row["verdict"] = verdict(row, quick=args.quick)
                rows.append(row)
                print(f"  {backend}, {workers} worker(s): done in {row['wall_s']:.0f} s, states {row['states']}",
                      flush=True)  # fmt: skip
        print_results(rows)
        _common.write_json(args.json, "overhead", [{**row, "quick": args.quick} for row in rows], info)
        if args.profile:
            profile_worker(
                data_dir,
                backend="postgresql" if "postgresql" in backends else "sqlite",
                trials=args.trials_per_worker,
                epochs=args.epochs,
                max_params=args.max_params,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
