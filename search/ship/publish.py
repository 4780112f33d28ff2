"""A written bundle logged to the study's MLflow store, best effort: MLflow mirrors, it never decides.

The bundle on disk is complete before this runs; when the store cannot take it, the outcome says why
and the retrain still succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.ship.bundle import BUNDLE_FILES, CONFIG_FILE, METRICS_FILE, ONNX_FILE, read_json
from search.ship.onnx import ONNX_INPUT, ONNX_RECORD_RR, onnx_scores
from search.tracking.bundle_log import BundleContent, BundleRun
from studies import StudyDefinition, mask_secrets


@dataclass(frozen=True)
class MlflowOutcome:
    """Where the bundle was logged, or why not."""

    uri: str | None  # the store, masked; None when MLflow is off
    run: BundleRun | None  # None when off or when the store failed
    error: str | None  # the store's error, one line, when it could not take the bundle
    register_as: str | None  # the registry name asked for (ignored when MLflow is off)


def log_to_mlflow(
    bundle_dir: Path,
    *,
    given_uri: str | None,
    definition: StudyDefinition,
    storage_url: str,
    study_name: str,
    trial_number: int,
    register_as: str | None,
    example: dict[str, np.ndarray],
) -> MlflowOutcome:
    """Log the bundle in `bundle_dir` under the study's parent run (the same experiment and parent the
    study's trials went to when the store is the study's own); never raises for the store's errors."""
    from search.tracking import resolve_tracking_uri, same_store
    from search.tracking.bundle_log import log_bundle
    from search.tracking.client import describe_error

    tracking_uri = resolve_tracking_uri(given_uri, storage_url, definition.mlflow_tracking_uri)
    if tracking_uri is None:
        return MlflowOutcome(uri=None, run=None, error=None, register_as=register_as)
    known = same_store(tracking_uri, definition.mlflow_tracking_uri)
    content = BundleContent(
        onnx_path=bundle_dir / ONNX_FILE,
        # The model itself is logged as the ONNX flavour, the other files as they are.
        artifact_paths=[bundle_dir / name for name in BUNDLE_FILES if name != ONNX_FILE],
        config=read_json(bundle_dir / CONFIG_FILE),
        metrics=read_json(bundle_dir / METRICS_FILE),
        # One input is logged as an array (the signature MLflow has always shown), two by name.
        example=example if len(example) > 1 else example[ONNX_INPUT],
        example_scores=onnx_scores(bundle_dir / ONNX_FILE, example[ONNX_INPUT], record_rr=example.get(ONNX_RECORD_RR)),
    )
    try:
        run = log_bundle(
            content,
            tracking_uri=tracking_uri,
            study_name=study_name,
            run_name=f"retrain-trial-{trial_number}",
            experiment_id=definition.mlflow_experiment_id if known else None,
            parent_run_id=definition.mlflow_parent_run_id if known else None,
            register_as=register_as,
        )
    except Exception as error:  # MLflow mirrors, never decides: the bundle on disk is complete
        return MlflowOutcome(
            uri=mask_secrets(tracking_uri),
            run=None,
            error=describe_error(error, tracking_uri).splitlines()[0],
            register_as=register_as,
        )
    return MlflowOutcome(uri=mask_secrets(tracking_uri), run=run, error=None, register_as=register_as)
