"""`ecgsearch predict`: score ECG windows with an exported bundle (PyTorch or ONNX Runtime)."""

from __future__ import annotations

import argparse

from search.cli.options import add_command


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "predict",
        help="score ECG windows with an exported model",
        description="Loads an export bundle (from `ecgsearch retrain`), normalises the windows with the "
        "statistics stored in it and writes one row per window: the score (probability of an anomalous "
        "window, or an autoencoder's reconstruction error) and the label (1 when score >= the bundle's "
        "threshold). Input: .pt (a tensor), .npy, or .npz (key X or X_test, else its only array) of shape "
        "(N, leads, samples); a single (leads, samples) window is accepted. Output: CSV or JSON by the "
        "suffix of --out; CSV on stdout without --out.",
        example="ecgsearch predict --model exports/cnn_lstm --input windows.npy --out scores.csv --runtime onnx",
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="export bundle folder")
    parser.add_argument("--input", required=True, metavar="FILE", help=".pt, .npy or .npz file of windows")
    parser.add_argument("--out", default=None, metavar="FILE", help=".csv or .json file (default: CSV on stdout)")
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnx"),
        default="torch",
        help="PyTorch (model.pt) or ONNX Runtime (model.onnx); both give the same scores",
    )
    parser.add_argument("--batch-size", type=int, default=256, metavar="N", help="windows per forward pass")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import sys

    from rich.console import Console

    from search.ship.bundle import load_bundle
    from search.ship.predict import check_out_suffix, check_shape, load_windows, predict, to_csv, write_predictions

    if args.out is not None:
        check_out_suffix(args.out)  # before any work, so a typo costs nothing
    bundle = load_bundle(args.model)
    windows = load_windows(args.input)
    check_shape(windows, bundle, args.input)
    predictions = predict(bundle, windows, runtime=args.runtime, batch_size=args.batch_size)
    if args.out is None:
        sys.stdout.write(to_csv(predictions))
        return 0
    out = write_predictions(predictions, args.out)
    flagged = int(predictions.labels.sum())
    Console(stderr=True, highlight=False).print(
        f"{len(predictions.scores)} windows scored with {args.runtime} ({predictions.score_kind}); "
        f"{flagged} labelled anomalous (score >= {predictions.threshold:.6g}); written to {out}"
    )
    return 0
