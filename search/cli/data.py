"""`ecgsearch data`: prepare the real MIT-BIH records, make a synthetic set, or check a dataset."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from search.cli.options import add_command

console = Console(highlight=False)


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "data",
        help="prepare, synthesise or check ECG datasets",
        description="Turn raw ECG records into the six-tensor layout (X_train.pt … y_test.pt) that "
        "--data expects, make a synthetic ECG-like dataset, or check a dataset before a search.",
        example="ecgsearch data prepare mitdb --source ../shared/data/mitdb --out data/mitdb",
    )
    parser.set_defaults(func=lambda args: _print_help(parser))
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    _register_prepare(actions)
    _register_synth(actions)
    _register_check(actions)
    return parser


def _register_prepare(actions) -> None:
    prepare = add_command(
        actions,
        "prepare",
        help="convert a raw public database into the six-tensor layout",
        description="Convert a raw public ECG database into the six-tensor layout plus meta.json.",
        example="ecgsearch data prepare mitdb --source ../shared/data/mitdb --out data/mitdb",
    )
    prepare.set_defaults(func=lambda args: _print_help(prepare))
    databases = prepare.add_subparsers(dest="database", metavar="DATABASE")
    mitdb = add_command(
        databases,
        "mitdb",
        help="MIT-BIH Arrhythmia Database (raw WFDB files) -> 10 s windows, inter-patient split",
        description="Read the 48 raw MIT-BIH records (WFDB .hea/.dat/.atr), map leads to II/V1/V5 "
        "(a missing lead stays zero and is recorded in meta.json), resample to --fs-out, cut "
        "non-overlapping windows and label them (1 = any beat other than 'N', an 'x', '[' or ']', "
        "or any rhythm other than '(N'). DS1 records (de Chazal 2004) become training and "
        "validation (split by record), DS2 records the test set. Does nothing when --out already "
        "holds a complete conversion of the same files with the same settings (see --force).",
        example="ecgsearch data prepare mitdb --source ../shared/data/mitdb --out data/mitdb --seed 1",
    )
    mitdb.add_argument("--source", required=True, help="folder with the raw records (100.hea, 100.dat, 100.atr …)")
    mitdb.add_argument("--out", default="data/mitdb", help="folder to write X_train.pt … y_test.pt and meta.json")
    mitdb.add_argument(
        "--no-exclude-paced",
        dest="exclude_paced",
        action="store_false",
        help="keep the paced records 102 104 107 217 (in the training/validation pool)",
    )
    mitdb.add_argument("--val-fraction", type=float, default=0.2, help="share of DS1 records used for validation")
    mitdb.add_argument("--seed", type=int, default=0, help="seed for choosing the validation records")
    mitdb.add_argument("--fs-out", type=int, default=200, help="sampling rate of the windows (Hz)")
    mitdb.add_argument("--window-s", type=int, default=10, help="window length in seconds")
    mitdb.add_argument("--force", action="store_true", help="convert again even when --out is up to date")
    mitdb.set_defaults(func=_run_prepare_mitdb)


def _register_synth(actions) -> None:
    synth = add_command(
        actions,
        "synth",
        help="write a synthetic ECG-like dataset (for trying the tool without real data)",
        description="Write ECG-like windows (P/QRS/T waves, heart-rate variation, baseline wander, "
        "noise) with labelled anomalies (premature, wide-QRS and dropped beats) in the six-tensor "
        "layout. meta.json marks the data as synthetic. Does nothing when --out already holds the "
        "same synthetic set (see --force).",
        example="ecgsearch data synth --out data/synth --n-train 480 --seed 1",
    )
    synth.add_argument("--out", default="data/synth", help="folder to write X_train.pt … y_test.pt and meta.json")
    synth.add_argument("--n-train", type=int, default=240, help="training windows")
    synth.add_argument("--n-val", type=int, default=80, help="validation windows")
    synth.add_argument("--n-test", type=int, default=80, help="test windows")
    synth.add_argument("--n-leads", type=int, default=3, help="leads per window")
    synth.add_argument("--seq-len", type=int, default=2000, help="samples per window")
    synth.add_argument("--fs", type=int, default=200, help="sampling rate (Hz)")
    synth.add_argument("--anomaly-fraction", type=float, default=0.35, help="share of windows labelled 1")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.add_argument("--force", action="store_true", help="write again even when --out is up to date")
    synth.set_defaults(func=_run_synth)


def _register_check(actions) -> None:
    check = add_command(
        actions,
        "check",
        help="load and validate a dataset, and summarise it",
        description="Load a dataset folder (X_train.pt … y_test.pt) or .npz file, run every check a "
        "search runs before training, and print shapes, class balance per split and the fingerprint "
        "a study records.",
        example="ecgsearch data check data/mitdb",
    )
    check.add_argument("path", metavar="DIR", help="dataset folder or .npz file")
    check.set_defaults(func=_run_check)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _run_prepare_mitdb(args: argparse.Namespace) -> int:
    from search.data import prepare_mitdb

    with console.status("Converting MIT-BIH records…"):
        summary = prepare_mitdb(
            args.source,
            args.out,
            fs_out=args.fs_out,
            window_s=args.window_s,
            exclude_paced=args.exclude_paced,
            val_fraction=args.val_fraction,
            seed=args.seed,
            reuse_existing=not args.force,
        )
    _report_written(summary, f"MIT-BIH -> {summary['out']}")
    totals = summary["totals_before_exclusions"]
    console.print(
        f"All records before exclusions: {totals['windows']:,} windows, {totals['labelled_1']:,} labelled 1 "
        f"(DS1 {totals['DS1']['windows']:,}/{totals['DS1']['labelled_1']:,}, "
        f"DS2 {totals['DS2']['windows']:,}/{totals['DS2']['labelled_1']:,}); "
        f"validation records: {' '.join(summary['records']['val'])}; "
        f"excluded: {' '.join(summary['excluded_records']) or 'none'}."
    )
    console.print(f"Licence: {summary['licence']['name']}; cite: " + " | ".join(summary["licence"]["cite"]))
    return 0


def _run_synth(args: argparse.Namespace) -> int:
    from search.data import make_synthetic

    summary = make_synthetic(
        args.out,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        n_leads=args.n_leads,
        seq_len=args.seq_len,
        fs=args.fs,
        anomaly_fraction=args.anomaly_fraction,
        seed=args.seed,
        reuse_existing=not args.force,
    )
    _report_written(summary, f"Synthetic ECG-like data -> {summary['out']}")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    from search.data import check_report, load_dataset

    report = check_report(load_dataset(args.path))
    table = Table(title=report.title)
    for index, column in enumerate(report.columns):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=index < 2)
    for row in report.rows():
        table.add_row(*row)
    console.print(table)
    for line in report.notes:
        console.print(line)
    for warning in report.warnings:
        console.print(f"[yellow]warning: {warning}[/yellow]")
    return 0


def _report_written(summary: Mapping[str, Any], title: str) -> None:
    if summary["skipped"]:
        console.print(
            f"[green]{summary['out']} already holds this data (same source and settings); "
            "nothing to do (--force converts again).[/green]"
        )
    else:
        console.print(f"[green]Wrote {summary['out']} in {summary['seconds']:.1f} s.[/green]")
    console.print(_counts_table(title, summary["counts"]))


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
