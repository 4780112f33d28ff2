"""`ecgsearch retrain`: the best trial's config from scratch over several seeds, then the export bundle."""

from __future__ import annotations

import click

from search.cli.options import example, mlflow_option, storage_option


@click.command(
    "retrain",
    short_help="retrain the best trial from scratch (several seeds) and export it",
    epilog=example("ecgsearch retrain --study cnn_lstm --seeds 3 --out exports/cnn_lstm --register-as ecg-cnn-lstm"),
)
@click.option("--study", "study_name", required=True, help="study name")
@storage_option
@click.option(
    "--trial",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="retrain trial number N instead of the best (it must be COMPLETE)",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, metavar="E", help="epoch budget (default: the study's)"
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="K",
    help="train K times with seeds config.seed .. config.seed+K-1; export the best on validation",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=None,
    metavar="P",
    help="early stopping on validation after P epochs without improvement, 0 = off (default: max(3, epochs // 4))",
)
@click.option("--out", "out_dir", default=None, metavar="DIR", help="bundle folder (default: exports/<study>)")
@click.option(
    "--register-as", default=None, metavar="NAME", help="register the exported model in the MLflow model registry"
)
@mlflow_option
@click.option(
    "--data",
    default=None,
    metavar="DIR",
    help="data folder or .npz (default: the path stored in the study); its fingerprint must match the study's",
)
@click.option(
    "--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True, help="training device"
)
def command(
    study_name: str,
    storage: str,
    trial: int | None,
    epochs: int | None,
    seeds: int,
    patience: int | None,
    out_dir: str | None,
    register_as: str | None,
    mlflow_uri: str | None,
    data: str | None,
    device: str,
) -> int:
    """Takes the best COMPLETE trial of a study (or --trial N), rebuilds its exact config, trains it from
    scratch on the study's data with the full epoch budget and early stopping on validation, once per seed,
    and evaluates each seed once on the test split (mean ± std across seeds). The seed best on validation is
    exported to --out: model.pt (state_dict), model.onnx (with the score head), config.json, metrics.json and
    README.md, and logged to MLflow under the study's run.
    """
    from search.ship.retrain import retrain

    retrain(
        study_name,
        storage=storage,
        trial_number=trial,
        epochs=epochs,
        seeds=seeds,
        patience=patience,
        out=out_dir,
        register_as=register_as,
        mlflow_uri=mlflow_uri,
        data=data,
        device=device,
    )
    return 0
