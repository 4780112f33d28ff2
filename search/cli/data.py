"""`ecgsearch data`: prepare the real MIT-BIH records, make a synthetic set, or check a dataset.

The data layer checks the values (its messages name the flag); these commands only parse and print.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from rich.table import Table

from search.cli.console import out, print_table, print_warning
from search.cli.options import example


@click.group(
    "data",
    short_help="prepare, synthesise or check ECG datasets",
    epilog=example("ecgsearch data prepare mitdb --source ../shared/data/mitdb --out data/mitdb"),
)
def command() -> None:
    """Turn raw ECG records into the six-tensor layout (X_train.pt … y_test.pt) that --data expects, make a
    synthetic ECG-like dataset, or check a dataset before a search."""


@command.group(
    "prepare",
    short_help="convert a raw public database into the six-tensor layout",
    epilog=example("ecgsearch data prepare mitdb --source ../shared/data/mitdb --out data/mitdb"),
)
def prepare() -> None:
    """Convert a raw public ECG database into the six-tensor layout plus meta.json."""


@prepare.command(
    "mitdb",
    short_help="MIT-BIH Arrhythmia Database (raw WFDB files) -> 10 s windows, inter-patient split",
    epilog=example("ecgsearch data prepare mitdb --source ../shared/data/mitdb --out data/mitdb --seed 1"),
)
@click.option(
    "--source", required=True, metavar="DIR", help="folder with the raw records (100.hea, 100.dat, 100.atr …)"
)
@click.option(
    "--out",
    "out_dir",
    default="data/mitdb",
    show_default=True,
    metavar="DIR",
    help="folder to write X_train.pt … y_test.pt and meta.json",
)
@click.option(
    "--no-exclude-paced",
    "keep_paced",
    is_flag=True,
    help="keep the paced records 102 104 107 217 (in the training/validation pool)",
)
@click.option(
    "--val-fraction", type=float, default=0.2, show_default=True, help="share of DS1 records used for validation"
)
@click.option("--seed", type=int, default=0, show_default=True, help="seed for choosing the validation records")
@click.option("--fs-out", type=int, default=200, show_default=True, help="sampling rate of the windows (Hz)")
@click.option("--window-s", type=int, default=10, show_default=True, help="window length in seconds")
@click.option("--force", is_flag=True, help="convert again even when --out is up to date")
def prepare_mitdb_command(
    source: str, out_dir: str, keep_paced: bool, val_fraction: float, seed: int, fs_out: int, window_s: int, force: bool
) -> int:
    """Read the 48 raw MIT-BIH records (WFDB .hea/.dat/.atr), map leads to II/V1/V5 (a missing lead stays
    zero and is recorded in meta.json), resample to --fs-out, cut non-overlapping windows and label them
    (1 = any beat other than 'N', an 'x', '[' or ']', or any rhythm other than '(N'). DS1 records (de Chazal
    2004) become training and validation (split by record), DS2 records the test set. Does nothing when --out
    already holds a complete conversion of the same files with the same settings (see --force).
    """
    from search.data import prepare_mitdb

    with out.status("Converting MIT-BIH records…"):
        summary = prepare_mitdb(
            source,
            out_dir,
            fs_out=fs_out,
            window_s=window_s,
            exclude_paced=not keep_paced,
            val_fraction=val_fraction,
            seed=seed,
            reuse_existing=not force,
        )
    _report_written(summary, f"MIT-BIH -> {summary['out']}")
    totals = summary["totals_before_exclusions"]
    out.print(
        f"All records before exclusions: {totals['windows']:,} windows, {totals['labelled_1']:,} labelled 1 "
        f"(DS1 {totals['DS1']['windows']:,}/{totals['DS1']['labelled_1']:,}, "
        f"DS2 {totals['DS2']['windows']:,}/{totals['DS2']['labelled_1']:,}); "
        f"validation records: {' '.join(summary['records']['val'])}; "
        f"excluded: {' '.join(summary['excluded_records']) or 'none'}."
    )
    out.print(f"Licence: {summary['licence']['name']}; cite: " + " | ".join(summary["licence"]["cite"]))
    return 0


@command.command(
    "synth",
    short_help="write a synthetic ECG-like dataset (for trying the tool without real data)",
    epilog=example("ecgsearch data synth --out data/synth --n-train 480 --seed 1"),
)
@click.option(
    "--out",
    "out_dir",
    default="data/synth",
    show_default=True,
    metavar="DIR",
    help="folder to write X_train.pt … y_test.pt and meta.json",
)
@click.option("--n-train", type=int, default=240, show_default=True, help="training windows")
@click.option("--n-val", type=int, default=80, show_default=True, help="validation windows")
@click.option("--n-test", type=int, default=80, show_default=True, help="test windows")
@click.option("--n-leads", type=int, default=3, show_default=True, help="leads per window")
@click.option("--seq-len", type=int, default=2000, show_default=True, help="samples per window")
@click.option("--fs", type=int, default=200, show_default=True, help="sampling rate (Hz)")
@click.option("--anomaly-fraction", type=float, default=0.35, show_default=True, help="share of windows labelled 1")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed")
@click.option("--force", is_flag=True, help="write again even when --out is up to date")
def synth_command(out_dir: str, force: bool, **sizes: Any) -> int:
    """Write ECG-like windows (P/QRS/T waves, heart-rate variation, baseline wander, noise) with labelled
    anomalies (premature, wide-QRS and dropped beats) in the six-tensor layout. meta.json marks the data as
    synthetic. Does nothing when --out already holds the same synthetic set (see --force).
    """
    from search.data import make_synthetic

    summary = make_synthetic(out_dir, reuse_existing=not force, **sizes)
    _report_written(summary, f"Synthetic ECG-like data -> {summary['out']}")
    return 0


@command.command(
    "check",
    short_help="load and validate a dataset, and summarise it",
    epilog=example("ecgsearch data check data/mitdb"),
)
@click.argument("path", metavar="DIR")
def check_command(path: str) -> int:
    """Load a dataset folder (X_train.pt … y_test.pt, optionally groups_*.pt) or .npz file, run every check a
    search runs before training, and print shapes, class balance and patients per split, patients shared
    between training and test, the sampling rate and the fingerprint a study records.
    """
    from search.data import check_report, load_dataset

    report = check_report(load_dataset(path))
    table = Table(title=report.title)
    for index, column in enumerate(report.columns):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=index < 2)
    for row in report.rows():
        table.add_row(*row)
    print_table(table)
    for line in report.notes:
        out.print(line)
    for warning in report.warnings:
        print_warning(warning)
    return 0


def _report_written(summary: Mapping[str, Any], title: str) -> None:
    if summary["skipped"]:
        out.print(
            f"{summary['out']} already holds this data (same source and settings); nothing to do (--force "
            "converts again).",
            style="green",
        )
    else:
        out.print(f"Wrote {summary['out']} in {summary['seconds']:.1f} s.", style="green")
    out.print(_counts_table(title, summary["counts"]))


def _counts_table(
    title: str, counts: Mapping[str, Mapping[str, int]], shapes: Mapping[str, tuple[int, ...]] | None = None
) -> Table:
    table = Table(title=title)
    table.add_column("split")
    if shapes:
        table.add_column("X shape", justify="right")
    for column in ("windows", "labelled 1", "labelled 0", "% anomalous"):
        table.add_column(column, justify="right")
    for split, count in counts.items():
        windows, positives = count["windows"], count["labelled_1"]
        row = [split]
        if shapes:
            row.append(" × ".join(str(n) for n in shapes[split]))
        share = f"{100 * positives / windows:.1f}" if windows else "-"
        row += [f"{windows:,}", f"{positives:,}", f"{windows - positives:,}", share]
        table.add_row(*row)
    return table
