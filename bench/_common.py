"""Shared by every benchmark: data loading, timing, argument parsing, the machine line, result tables.

Each benchmark runs its contender and its baseline in the same process on the same data and reports a
ratio; absolute times on a shared machine are noise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/X.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

# The real records: $MITDB_DIR, else ../shared/data/mitdb beside the repository (as the tests look).
DEFAULT_MITDB = REPO_ROOT.parent / "shared" / "data" / "mitdb"
# Converting MIT-BIH takes ~5–10 s; the converted tensors are kept here and reused by later runs.
PREPARED_CACHE = Path(tempfile.gettempdir()) / f"ecgsearch-bench-{os.getuid()}" / "mitdb"
SYNTHETIC_CACHE = Path(tempfile.gettempdir()) / f"ecgsearch-bench-{os.getuid()}" / "synth"


def mitdb_source() -> Path | None:
    """The raw MIT-BIH folder when its records are there, else None."""
    source = Path(os.environ.get("MITDB_DIR", DEFAULT_MITDB))
    return source if (source / "100.hea").is_file() else None


@dataclass
class BenchData:
    folder: Path  # the six-file layout on disk (workers started as processes load it from here)
    label: str  # what the data is, for the output: real MIT-BIH or synthetic


def prepared_data(*, synthetic_sizes: tuple[int, int, int] = (600, 200, 80)) -> BenchData:
    """The real MIT-BIH set (DS1 train/val, DS2 test) when the raw records exist, else a synthetic one."""
    from search.data import make_synthetic, prepare_mitdb

    source = mitdb_source()
    if source is not None:
        prepare_mitdb(source, PREPARED_CACHE, reuse_existing=True)
        return BenchData(PREPARED_CACHE, f"real MIT-BIH ({source}), DS1 train/val")
    n_train, n_val, n_test = synthetic_sizes
    folder = SYNTHETIC_CACHE / f"{n_train}-{n_val}-{n_test}"
    make_synthetic(folder, n_train=n_train, n_val=n_val, n_test=n_test, reuse_existing=True)
    return BenchData(
        folder,
        "SYNTHETIC ECG-like data: real MIT-BIH records not found (set MITDB_DIR or place them in "
        f"{DEFAULT_MITDB}); numbers are not comparable to real-data runs",
    )


def load_split(
    data: BenchData, *, max_train: int | None, max_val: int | None, max_test: int | None = 2, seed: int = 0
) -> Any:
    """The normalised dataset (a stratified subset of it), on the CPU."""
    from search.data import load_dataset

    dataset = load_dataset(data.folder).subset(max_train=max_train, max_val=max_val, max_test=max_test, seed=seed)
    normalised, _stats = dataset.normalised()
    return normalised


def save_subset(dataset: Any, folder: Path) -> Path:
    dataset.save(folder)
    return folder


@contextlib.contextmanager
def storage_proxy(database_url: str) -> Iterator[tuple[str, int]]:
    """A real `ecgsearch storage-proxy` on `database_url` (a subprocess, on a free local port): its grpc:// URL
    and its pid. Stopped with SIGTERM (as Kubernetes stops a pod): a benchmark started in the background has
    SIGINT ignored, and so would its proxy."""
    import signal
    import socket
    import subprocess

    from studies.storage import open_proxy

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ECGSEARCH_STORAGE": database_url, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "search.cli", "storage-proxy", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"grpc://127.0.0.1:{port}"
        open_proxy(url, timeout_s=120).close()
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def base_parser(description: str) -> argparse.ArgumentParser:
    """`--quick` (seconds: proves the script works, asserts nothing about speed) and `--json FILE`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: proves the script works in seconds; numbers mean nothing"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="append one JSON line per result")
    return parser


@dataclass
class FoldBench:
    """What a cross-validation bench runs on: its arguments, the dataset (a tiny slice under --quick), the
    data's label, the number of folds and the epochs per fold."""

    args: argparse.Namespace
    dataset: Any
    label: str
    folds: int
    epochs: int


def fold_bench(
    description: str,
    argv: list[str] | None,
    *,
    folds: int,
    epochs: int,
    more_options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> FoldBench:
    """Parse `--data DIR` (default: the bench's MIT-BIH DS1), `--epochs N`, `--quick`, `--json` and what
    `more_options` adds; load the data. Under --quick: a tiny slice, 3 folds and 2 epochs."""
    parser = base_parser(description)
    parser.add_argument("--data", type=Path, default=None, help="a six-file dataset (default: MIT-BIH DS1)")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs per fold (default {epochs})")
    if more_options is not None:
        more_options(parser)
    args = parser.parse_args(argv)
    from search.data import load_dataset

    if args.data is not None:
        source, label = args.data, f"{args.data} (given)"
    else:
        bench_data = prepared_data()
        source, label = bench_data.folder, bench_data.label
    dataset = load_dataset(source)
    if args.quick:
        dataset = dataset.subset(max_train=120, max_val=60, max_test=2, seed=0)
    return FoldBench(args, dataset, label, 3 if args.quick else folds, args.epochs or (2 if args.quick else epochs))


def rhythm_starting_point(*, relative: bool) -> dict[str, Any]:
    """The model parameters of the search's second starting point: the `cnn` defaults with the rhythm branch
    (`average` fusion), record-relative timing when `relative`."""
    import ecgmodels

    return {**ecgmodels.default_params("cnn"), "rhythm_branch": True, "rhythm_fusion": "average",
            "rhythm_relative": relative}  # fmt: skip


def fitted_cv_runs(
    dataset: Any, folds: Any, cfg: Any, params: dict[str, Any], family: str = "cnn"
) -> list[tuple[Any, Any]]:
    """(run, view) per fold: each fold's model trained in lockstep on its own training patients, as a `--cv`
    trial trains them (`folds`: one fold id per train+val window; `view`: the fold's normalised dataset)."""
    import ecgmodels
    from search.data import fold_datasets
    from search.training.device import seed_everything
    from search.training.loop import TrainingRun, fit_lockstep

    fitted = []
    for fold in fold_datasets(dataset, folds):
        seed_everything(cfg.seed)
        model = ecgmodels.build(family, n_channels=dataset.n_channels, seq_len=dataset.seq_len, fs=dataset.fs, **params)
        view = fold.normalised()[0]
        fitted.append((TrainingRun(model, view, cfg, autoencoder=False, fs=dataset.fs), view))
    fit_lockstep([run for run, _ in fitted])
    return fitted


def mean_cv_curve(dataset: Any, folds: Any, cfg: Any, params: dict[str, Any], family: str = "cnn") -> list[float]:
    """The validation objective per epoch, averaged over the folds (`fitted_cv_runs`)."""
    runs = [run for run, _ in fitted_cv_runs(dataset, folds, cfg, params, family)]
    return [statistics.fmean(values) for values in zip(*(run.objective_curve() for run in runs), strict=True)]


def rhythm_regression() -> Any:
    """The rhythm baseline's model, unfitted: standardisation and a logistic regression (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def regression_scorer(features: Any, y: Any) -> Callable[[Any], Callable[[Any], Any]]:
    """training rows → (rows → probabilities) of `rhythm_regression` fitted to those rows of `features`."""

    def scorer_for(train: Any) -> Callable[[Any], Any]:
        model = rhythm_regression().fit(features[train], y[train])
        return lambda rows: model.predict_proba(features[rows])[:, 1]

    return scorer_for


@dataclass
class HeldOut:
    """One fold's held-out labels and probabilities, and the cut the one rule chose on its training rows."""

    y: Any
    probabilities: Any
    cut: float


def held_out_folds(y: Any, folds: Any, scorer_for: Callable[[Any], Callable[[Any], Any]]) -> list[HeldOut]:
    """Per fold (`folds`: one fold id per row), the held-out rows scored by what `scorer_for` fits on the
    other folds' rows, with the cut chosen on those training rows."""
    import numpy as np

    from search.training.metrics import choose_threshold

    folds = np.asarray(folds)
    held = []
    for fold in range(int(folds.max()) + 1):
        train, held_out = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        score = scorer_for(train)
        held.append(HeldOut(y[held_out], score(held_out), choose_threshold(score(train), y[train], "f1_macro")))
    return held


def run_held_out(run: Any) -> HeldOut:
    """A fitted fold run (`fitted_cv_runs`) as it is: its validation windows scored, at the cut the one rule
    chooses on its training windows."""
    from search.training.metrics import choose_threshold
    from search.training.scoring import score

    training = score(run.scorer, run.X_train, record_rr=run.rr_train).cpu().numpy()
    cut = choose_threshold(training, run.y_train.cpu().numpy(), "f1_macro")
    return HeldOut(run.y_val_cpu.numpy(), score(run.scorer, run.X_val, record_rr=run.rr_val).cpu().numpy(), cut)


def mean_of_folds(held: Sequence[HeldOut]) -> tuple[float, float]:
    """Mean ROC-AUC and F1 macro (at each fold's cut) over the folds: the figure a `--cv` trial reports."""
    from sklearn.metrics import f1_score, roc_auc_score

    aucs = [roc_auc_score(fold.y, fold.probabilities) for fold in held]
    f1s = [f1_score(fold.y, fold.probabilities >= fold.cut, average="macro") for fold in held]
    return statistics.fmean(aucs), statistics.fmean(f1s)


def pooled_out_of_fold(held: Sequence[HeldOut]) -> tuple[float, float]:
    """ROC-AUC and F1 macro (each row at its fold's cut) over every held-out row at once, as one test set of
    all the patients is scored: between-patient differences count, which a fold of a few patients hides."""
    import numpy as np
    from sklearn.metrics import f1_score, roc_auc_score

    y = np.concatenate([fold.y for fold in held])
    probabilities = np.concatenate([fold.probabilities for fold in held])
    flagged = np.concatenate([fold.probabilities >= fold.cut for fold in held])
    return roc_auc_score(y, probabilities), f1_score(y, flagged, average="macro")


def cv_scores(y: Any, folds: Any, scorer_for: Callable[[Any], Callable[[Any], Any]]) -> tuple[float, float]:
    """Mean ROC-AUC and F1 macro over the folds of the scorer `scorer_for` fits on the other folds' rows; F1 at
    the one rule's cut, chosen on those training rows."""
    return mean_of_folds(held_out_folds(y, folds, scorer_for))


def rhythm_regression_cv(dataset: Any, fold_seeds: Sequence[int], k: int, *, relative: bool) -> list[float]:
    """Mean patient-grouped CV ROC-AUC, per fold seed, of a logistic regression on the rhythm features of the
    normalised windows (what the models see) of train+val; `relative`: record-relative rate features."""
    import torch

    import ecgmodels
    from search.data import dataset_folds

    normalised, _ = dataset.normalised()
    X = torch.cat([normalised.X_train, normalised.X_val])
    y = torch.cat([normalised.y_train, normalised.y_val]).numpy()
    record_rr = None
    if relative:
        record_rr = ecgmodels.record_rr(X, torch.cat([normalised.groups_train, normalised.groups_val]), fs=dataset.fs)
    extractor = ecgmodels.RhythmFeatures(fs=dataset.fs, seq_len=dataset.seq_len).eval()
    with torch.inference_mode():
        parts = [extractor(X[i : i + 256], None if record_rr is None else record_rr[i : i + 256])
                 for i in range(0, len(X), 256)]  # fmt: skip
    scorer_for = regression_scorer(torch.cat(parts).numpy(), y)
    return [cv_scores(y, dataset_folds(dataset, k, seed), scorer_for)[0] for seed in fold_seeds]


def median_seconds(function: Callable[[], Any], *, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Where and when the numbers were taken; the load average says how shared the machine was."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "loadavg": load,
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def print_header(title: str, *, data_label: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    info = machine_info()
    print(f"== {title}")
    print(
        f"machine: {info['nproc']} cores, {info['cpu']}, load average {info['loadavg']}, "
        f"torch {info.get('torch')} ({info.get('torch_threads')} threads), CUDA: {info.get('cuda') or 'none'}"
    )
    print(f"date: {info['date']}  command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    if data_label:
        print(f"data: {data_label}")
    for key, value in (extra or {}).items():
        print(f"{key}: {value}")
    return info


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """A small aligned text table (also valid Markdown)."""
    cells = [[_cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    print("| " + " | ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    for line in cells:
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) + " |")


def write_json(path: Path | None, benchmark: str, records: Sequence[dict[str, Any]], info: dict[str, Any]) -> None:
    """One JSON line per result, each carrying the benchmark name and the machine it ran on."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps({"benchmark": benchmark, **record, "machine": info}, default=str) + "\n")


class ArmTable:
    """One row per model, one value per arm (`arms`: the baseline, then the contender), reported with the
    contender / baseline ratio of each row."""

    def __init__(self, arms: tuple[str, str]) -> None:
        self.arms = arms
        self.rows: dict[str, dict[str, Any]] = {}

    def put(self, model: str, arm: str, value: float) -> None:
        self.rows.setdefault(model, {"model": model})[arm] = value

    def report(self, benchmark: str, json_path: Path | None, info: dict[str, Any]) -> None:
        """Print the table with its ratios and append it to `json_path`."""
        baseline, contender = self.arms
        table = [{**row, "ratio": row[contender] / row[baseline]} for row in self.rows.values()]
        print()
        print_table(table, ["model", *self.arms, "ratio"])
        write_json(json_path, benchmark, table, info)


def verdict(ratio: float | None, target: float, *, higher_is_better: bool = True) -> str:
    if ratio is None:
        return "not measured"
    met = ratio >= target if higher_is_better else ratio <= target
    return "met" if met else "MISSED"


if __name__ == "__main__":  # `make bench-quick` runs every bench/*.py: this one shows the machine line
    print_header("bench/_common.py: shared helpers (no benchmark here)")
