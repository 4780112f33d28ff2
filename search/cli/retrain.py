"""`ecgsearch retrain`: the best trial's config from scratch over several seeds, then the export bundle."""

from __future__ import annotations

import argparse

from search.cli.options import add_command, add_mlflow_flag, add_storage_flag, mlflow_flag_value


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "retrain",
        help="retrain the best trial from scratch (several seeds) and export it",
        description="Takes the best COMPLETE trial of a study (or --trial N), rebuilds its exact config, "
        "trains it from scratch on the study's data with the full epoch budget and early stopping on "
        "validation, once per seed, and evaluates each seed once on the test split (mean ± std across "
        "seeds). The seed best on validation is exported to --out: model.pt (state_dict), model.onnx "
        "(with the score head), config.json, metrics.json and README.md, and logged to MLflow under the "
        "study's run.",
        example="ecgsearch retrain --study cnn_lstm --seeds 3 --out exports/cnn_lstm --register-as ecg-cnn-lstm",
    )
    parser.add_argument("--study", required=True, help="study name")
    add_storage_flag(parser)
    parser.add_argument(
        "--trial",
        type=int,
        default=None,
        metavar="N",
        help="retrain trial number N instead of the best (it must be COMPLETE)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, metavar="E", help="epoch budget (default: the study's epoch budget)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="K",
        help="train K times with seeds config.seed .. config.seed+K-1; export the best on validation",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        metavar="P",
        help="early stopping on validation after P epochs without improvement, 0 = off (default: max(3, epochs // 4))",
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="bundle folder (default: exports/<study>)")
    parser.add_argument(
        "--register-as",
        default=None,
        metavar="NAME",
        help="register the exported model in the MLflow model registry under NAME",
    )
    add_mlflow_flag(parser)
    parser.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="data folder or .npz (default: the path stored in the study); its fingerprint must match the study's",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="training device")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from search.ship.retrain import retrain

    retrain(
        args.study,
        storage=args.storage,
        trial_number=args.trial,
        epochs=args.epochs,
        seeds=args.seeds,
        patience=args.patience,
        out=args.out,
        register_as=args.register_as,
        mlflow_uri=mlflow_flag_value(args),
        data=args.data,
        device=args.device,
    )
    return 0
