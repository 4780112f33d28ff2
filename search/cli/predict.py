"""`ecgsearch predict`: score ECG windows with an exported bundle (PyTorch or ONNX Runtime)."""

from __future__ import annotations

import sys

import click

from search.cli.console import err
from search.cli.options import example


@click.command(
    "predict",
    short_help="score ECG windows with an exported model",
    epilog=example("ecgsearch predict --model exports/cnn_lstm --input windows.npy --out scores.csv --runtime onnx"),
)
@click.option("--model", "model_dir", required=True, metavar="DIR", help="export bundle folder")
@click.option("--input", "input_path", required=True, metavar="FILE", help=".pt, .npy or .npz file of windows")
@click.option(
    "--groups",
    "groups_path",
    default=None,
    metavar="FILE",
    help=".pt, .npy or .npz file of patient ids, one integer per window: needed by a model with "
    "record-relative timing (config.json: record_rr), ignored by others",
)
@click.option("--out", "out_path", default=None, metavar="FILE", help=".csv or .json file (default: CSV on stdout)")
@click.option(
    "--runtime",
    type=click.Choice(("torch", "onnx")),
    default="torch",
    show_default=True,
    help="PyTorch (model.pt) or ONNX Runtime (model.onnx); both give the same scores",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    metavar="N",
    help="windows per forward pass",
)
def command(
    model_dir: str, input_path: str, groups_path: str | None, out_path: str | None, runtime: str, batch_size: int
) -> int:
    """Loads an export bundle (from `ecgsearch retrain`), normalises the windows with the statistics stored in
    it and writes one row per window: the score (probability of an anomalous window, or an autoencoder's
    reconstruction error) and the label (1 when score >= the bundle's threshold). Input: .pt (a tensor), .npy,
    or .npz (key X or X_test, else its only array) of shape (N, leads, samples); a single (leads, samples)
    window is accepted. Output: CSV or JSON by the suffix of --out; CSV on stdout without --out.

    A model trained with record-relative timing (the rate relative to the patient's own median R-R interval)
    needs the patient of each window: --groups FILE, whose windows of one patient give that patient's rate.
    """
    from search.ship.bundle import load_bundle
    from search.ship.predict import (
        check_out_suffix,
        check_shape,
        load_groups,
        load_windows,
        predict,
        to_csv,
        write_predictions,
    )

    if out_path is not None:
        check_out_suffix(out_path)  # before any work, so a typo costs nothing
    bundle = load_bundle(model_dir)
    windows = load_windows(input_path)
    check_shape(windows, bundle, input_path)
    groups = load_groups(groups_path, len(windows)) if groups_path is not None else None
    predictions = predict(bundle, windows, groups=groups, runtime=runtime, batch_size=batch_size)
    if out_path is None:
        sys.stdout.write(to_csv(predictions))
        return 0
    written = write_predictions(predictions, out_path)
    flagged = int(predictions.labels.sum())
    err.print(
        f"{len(predictions.scores)} windows scored with {runtime} ({predictions.score_kind}); "
        f"{flagged} labelled anomalous (score >= {predictions.threshold:.6g}); written to {written}"
    )
    return 0
