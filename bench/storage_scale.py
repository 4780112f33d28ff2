"""What one database carries: N simulated workers doing an ecgsearch trial's real bookkeeping, against
PostgreSQL directly and through `ecgsearch storage-proxy`.

Each worker is a process running the real worker loop (`search.optimize.worker._run_trials`: stale-trial
check, budget counts, one `study.optimize` per trial) and the real `TrialObjective` (the study's space
sampled by its TPE sampler, the user attributes, one report + attributes + prune check per epoch, the
liveness beat behind the proxy), with training replaced by `--epoch-s` seconds of sleep per epoch and
made-up metrics (the full metric set of a real epoch, so the `history` attribute has its real size).

Measured per (backend, N), on a fresh database, after every worker has started (imports excluded):
finished trials per second; per-trial overhead (next start - start - sleep, per worker) p50/p95; the
most connections to the study database seen in `pg_stat_activity`; errors (worker processes that failed,
FAIL trials). `vs_1_direct`: trials/s over that of 1 worker on PostgreSQL directly, measured in this run.
PostgreSQL: 127.0.0.1:5432, user postgres, trust auth (ECGSEARCH_BENCH_PG_HOST/PORT/USER).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import statistics
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # also puts the repository on sys.path
from overhead import PG_HOST, PG_PORT, PG_USER, postgres_database, postgres_reachable

STUDY = "scale"
SPACE = "cnn"


def definition(trials: int, epochs: int) -> Any:
    import optuna

    from search import __version__
    from studies import StudyDefinition

    return StudyDefinition(
        space=SPACE, data_path="/data", data_fingerprint="bench", n_channels=3, seq_len=2000,
        objective="roc_auc", direction="maximize", epochs=epochs, sampler="tpe", pruner="hyperband", seed=0,
        max_params=None, trials_budget=trials, ecgsearch_version=__version__, optuna_version=optuna.__version__,
        torch_version="-", fs=200.0,
    )  # fmt: skip


def epoch_metrics(epoch: int, quality: float) -> dict[str, float]:
    """The scalar metrics a real epoch reports (names as `fit` gives them), values made up."""
    names = ["accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_0", "precision_1",
             "recall_0", "recall_1", "f1_0", "f1_1", "roc_auc", "pr_auc"]  # fmt: skip
    value = min(0.99, quality * (1 - 0.5 / epoch))
    metrics = {f"val_{name}": value for name in names}
    metrics.update(train_loss=1 - value, val_loss=1 - value, lr=1e-3, epoch_seconds=0.0, samples_per_s=0.0)
    return metrics


def bookkeeping_objective_class() -> type:
    """The real TrialObjective with its model build and training replaced (the storage traffic is all real)."""
    import torch

    from search.optimize.objective import TrialObjective

    class Bookkeeping(TrialObjective):
        epoch_s = 0.0

        def _build(self, config: dict[str, Any]) -> tuple[torch.nn.Module, int]:
            return torch.nn.Identity(), 1000

        def _fit(self, trial: Any, cfg: Any, model: Any, outcome: Any) -> tuple[float, dict[str, Any]]:
            report = self._epoch_reporter(trial, outcome)
            quality = 0.5 + (hash(repr(sorted(trial.params.items()))) % 1000) / 2000
            for epoch in range(1, cfg.epochs + 1):
                time.sleep(self.epoch_s)
                report(epoch, epoch_metrics(epoch, quality))
            return outcome.history[-1]["val_roc_auc"], dict(outcome.history[-1])

    return Bookkeeping


def worker_main(storage_url: str, epoch_s: float, ready: Any, go: Any, index: int) -> None:
    """One simulated worker process: open the study, say ready, wait for the start, run trials until the budget."""
    from search.optimize.process import quiet_library_logs
    from search.optimize.settings import WorkerSettings
    from search.optimize.worker import _run_trials, sampler_seed, worker_identity
    from studies import has_storage_heartbeat, load_study_with_definition, make_sampler, open_storage

    quiet_library_logs()
    study, stored = load_study_with_definition(open_storage(storage_url, heartbeat_interval=5, grace_period=30), STUDY)
    study.sampler = make_sampler(stored.sampler, seed=sampler_seed(stored.seed, worker_identity(str(index))))
    liveness = None if has_storage_heartbeat(study._storage) else 5.0  # as run_worker decides it
    split = SimpleNamespace(n_channels=stored.n_channels, seq_len=stored.seq_len)
    objective = bookkeeping_objective_class()(definition=stored, splits=[split], device=SimpleNamespace(type="cpu"),
                                              liveness_interval_s=liveness, worker_label=str(index))  # fmt: skip
    objective.epoch_s = epoch_s
    ready.release()
    go.wait()
    _run_trials(study, objective, WorkerSettings(STUDY, storage_url, poll_interval_s=0.1), space=SPACE, seq_len=2000)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a local process so far (None when it is gone or not readable here)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DatabaseSampler(threading.Thread):
    """Every 0.2 s while the fleet runs: the connections to `database` (pg_stat_activity) and the CPU time of
    the server processes serving them (/proc, when PostgreSQL runs on this machine); commits from
    pg_stat_database before and after."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self.database, self.peak, self.stop = database, 0, threading.Event()
        self.backend_cpu: dict[int, float] = {}
        self.commits = 0

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)

    def _committed(self, db: Any) -> int:
        query = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s"
        return db.execute(query, (self.database,)).fetchone()[0]

    def run(self) -> None:
        with self._connect() as db:
            before = self._committed(db)
            while not self.stop.wait(0.2):
                pids = [row[0] for row in db.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                                                     (self.database,))]  # fmt: skip
                self.peak = max(self.peak, len(pids))
                for pid in pids:
                    if (seconds := cpu_seconds(pid)) is not None:
                        self.backend_cpu[pid] = seconds
            time.sleep(1.5)  # exited backends flush their statistics
            self.commits = self._committed(db) - before


def run_fleet(storage_url: str, database: str, workers: int, epoch_s: float, proxy_pid: int | None) -> dict[str, Any]:
    """Start `workers` processes, release them together, wait; wall time, connections, database and proxy CPU."""
    context = multiprocessing.get_context("spawn")
    ready, go = context.Semaphore(0), context.Event()
    processes = [context.Process(target=worker_main, args=(storage_url, epoch_s, ready, go, index))
                 for index in range(workers)]  # fmt: skip
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire(timeout=600)
    sampler = DatabaseSampler(database)
    sampler.start()
    proxy_before = cpu_seconds(proxy_pid) if proxy_pid else None
    started = time.perf_counter()
    go.set()
    for process in processes:
        process.join(timeout=900)
    wall = time.perf_counter() - started
    proxy_cpu = cpu_seconds(proxy_pid) - proxy_before if proxy_before is not None else None
    sampler.stop.set()
    sampler.join()
    failed = sum(1 for process in processes if process.exitcode != 0)
    return {"wall_s": wall, "connections": sampler.peak, "failed_workers": failed, "commits": sampler.commits,
            "db_cpu_s": sum(sampler.backend_cpu.values()) if sampler.backend_cpu else None,
            "proxy_cpu_s": proxy_cpu}  # fmt: skip


def trial_statistics(database_url: str, epochs: int, epoch_s: float) -> dict[str, Any]:
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=STUDY, storage=database_url)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    by_worker: dict[Any, list[Any]] = {}
    for trial in finished:
        by_worker.setdefault(trial.user_attrs.get("worker_pid"), []).append(trial)
    gaps = []
    for own in by_worker.values():
        own.sort(key=lambda t: t.datetime_start)
        for current, following in itertools.pairwise(own):
            slept = len(current.intermediate_values) * epoch_s
            gaps.append((following.datetime_start - current.datetime_start).total_seconds() - slept)
    span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
    gaps.sort()
    return {
        "finished": len(finished),
        # Surplus trials (the budget taken by other workers' concurrent trials) fail by design; others are errors.
        "fail_trials": sum(
            t.state == TrialState.FAIL and not str(t.user_attrs.get("fail_reason", "")).startswith("surplus")
            for t in trials
        ),
        "trials_per_s": len(finished) / span if span > 0 else float("nan"),
        "overhead_p50_s": statistics.median(gaps) if gaps else float("nan"),
        "overhead_p95_s": gaps[min(len(gaps) - 1, int(0.95 * len(gaps)))] if gaps else float("nan"),
    }


def measure(backend: str, workers: int, *, trials_per_worker: int, epochs: int, epoch_s: float) -> dict[str, Any]:
    from studies import create_or_load_study, open_storage

    with postgres_database() as database_url:
        create_or_load_study(open_storage(database_url), STUDY, definition(workers * trials_per_worker, epochs))
        direct = nullcontext((database_url, None))
        with _common.storage_proxy(database_url) if backend == "proxy" else direct as (storage_url, proxy_pid):
            row = run_fleet(storage_url, database_url.rpartition("/")[2], workers, epoch_s, proxy_pid)
        row.update(trial_statistics(database_url, epochs, epoch_s))
    row.update(backend=backend, workers=workers, errors=row["failed_workers"] + row["fail_trials"])
    # Backends' CPU is counted from connections alive at a sample: a lower bound (pre-ping, short-lived ones).
    finished = max(row["finished"], 1)
    row["commits_per_trial"] = row["commits"] / finished
    row["db_cpu_ms_per_trial"] = 1000 * row["db_cpu_s"] / finished if row["db_cpu_s"] is not None else None
    row["proxy_cpu_ms_per_trial"] = 1000 * row["proxy_cpu_s"] / finished if row["proxy_cpu_s"] is not None else None
    return row


def main(argv: list[str] | None = None) -> int:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,4,16", help="simulated worker counts (processes)")
    parser.add_argument("--backends", default="direct,proxy", help="direct (PostgreSQL) and/or proxy")
    parser.add_argument("--trials-per-worker", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=5, help="reports per trial")
    parser.add_argument("--epoch-s", type=float, default=0.01, help="the stand-in for training, per epoch")
    args = parser.parse_args(argv)
    from search.optimize.process import quiet_library_logs

    quiet_library_logs()
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.quick:
        counts, backends, args.trials_per_worker, args.epochs = [1], ["direct", "proxy"], 3, 2
    info = _common.print_header(
        "storage_scale: finished trials/s one PostgreSQL carries, directly and through the storage proxy"
        + (" (--quick: numbers mean nothing)" if args.quick else ""),
        extra={"setup": f"space {SPACE}, TPE + Hyperband, {args.trials_per_worker} trials per worker, "
               f"{args.epochs} epochs of {args.epoch_s} s each, real worker loop and TrialObjective bookkeeping"},
    )  # fmt: skip
    if not postgres_reachable():
        print(f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}: nothing measured")
        return 0
    # The baseline, 1 worker on PostgreSQL directly, is always measured.
    plan = [("direct", n) for n in sorted({1, *counts})] if "direct" in backends else [("direct", 1)]
    plan += [("proxy", n) for n in counts] if "proxy" in backends else []
    rows = []
    for backend, workers in plan:
        row = measure(backend, workers, trials_per_worker=args.trials_per_worker, epochs=args.epochs,
                      epoch_s=args.epoch_s)  # fmt: skip
        rows.append(row)
        print(f"  {backend}, {workers} worker(s): {row['finished']} trials in {row['wall_s']:.1f} s", flush=True)
    baseline = next((r["trials_per_s"] for r in rows if r["backend"] == "direct" and r["workers"] == 1), None)
    for row in rows:
        row["vs_1_direct"] = row["trials_per_s"] / baseline if baseline else float("nan")
    print()
    _common.print_table(rows, ["backend", "workers", "finished", "trials_per_s", "vs_1_direct", "overhead_p50_s",
                               "overhead_p95_s", "connections", "commits_per_trial", "db_cpu_ms_per_trial",
                               "proxy_cpu_ms_per_trial", "errors", "wall_s"])  # fmt: skip
    print(
        "\ntrials_per_s: finished trials over the span from the first start to the last end; vs_1_direct: over 1 "
        "worker on PostgreSQL directly in this run; overhead: next start - start - sleep, per worker; connections: "
        "the peak in pg_stat_activity; db_cpu: CPU of the PostgreSQL backends serving the study (a lower bound); "
        "proxy_cpu: CPU of the storage-proxy process. On a 2-core machine the workers, the proxy and PostgreSQL "
        "share the cores: trials/s here is the whole system's, the CPU per trial is what scales."
    )
    _common.write_json(args.json, "storage_scale", [{**row, "quick": args.quick} for row in rows], info)
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
