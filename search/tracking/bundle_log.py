"""An export bundle logged to MLflow: the ONNX model as a flavour, the bundle files, params and metrics.

The run is a child of the study's parent run, beside the trial runs, told apart by the role tag
`retrain`. The ONNX flavour serves with onnx/onnxruntime alone, unlike the pickled PyTorch one that
needs our model code importable. This module knows the bundle only as the content of its config.json
and metrics.json and the paths of its files (the bundle layout itself lives in `search.ship`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.tracking import names
from search.tracking.client import tracking_client
from search.tracking.runs import clean_key, param_value
from search.tracking.uri import http_reachable, is_http
from studies import mask_secrets

# Retrain runs are children of the study's parent run beside the trial runs, told apart by this role.
ROLE_RETRAIN = "retrain"
MLFLOW_PROBE_TIMEOUT_S = 5.0
BUNDLE_ARTIFACT_DIR = "bundle"
MODEL_ARTIFACT_NAME = "model"


@dataclass(frozen=True)
class BundleRun:
    """Where the bundle went in MLflow."""

    run_id: str
    experiment_id: str
    model_uri: str
    registered_version: str | None


@dataclass(frozen=True)
class BundleContent:
    """What is logged: the bundle's ONNX graph, its other files, config.json and metrics.json as dicts,
    and an input example (normalised windows) with the scores the graph gives it (for the signature)."""

    onnx_path: Path
    artifact_paths: Sequence[Path]
    config: dict[str, Any]
    metrics: dict[str, Any]
    example: np.ndarray | dict[str, np.ndarray]  # the windows, or every graph input by name when there are two
    example_scores: np.ndarray


def bundle_params(config: dict[str, Any], metrics: dict[str, Any]) -> dict[str, str]:
    """The flat config as `config.<key>` (as trial runs spell it), plus what the export chose."""
    params = {clean_key(names.CONFIG_PARAM_PREFIX + k): param_value(v) for k, v in config["config"].items()}
    chosen = {
        "n_params": config["n_params"],
        "threshold": config["threshold"],
        "exported_seed": metrics.get("exported_seed"),
        "seeds": len(metrics.get("seeds", [])),
        "ensemble": config.get("ensemble"),
        # "folds": the members are the cross-validation fold models; "seeds": a refit's seeds; None: one model.
        "ensemble_of": ("folds" if config.get("folds") else "seeds") if config.get("ensemble") else None,
    }
    return params | {key: param_value(value) for key, value in chosen.items()}


def bundle_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Test and validation metrics of the exported model, and mean/std over seeds; finite numbers only."""
    numbers = {f"test_{k}": v for k, v in metrics.get("test", {}).items()}
    numbers |= {f"val_{k}": v for k, v in metrics.get("validation", {}).items()}
    for name, stats in metrics.get("test_summary", {}).items():
        numbers[f"test_mean_{name}"] = stats.get("mean")
        numbers[f"test_std_{name}"] = stats.get("std")
    return {
        clean_key(key): float(value)
        for key, value in numbers.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def log_bundle(
    content: BundleContent,
    *,
    tracking_uri: str,
    study_name: str,
    run_name: str,
    experiment_id: str | None = None,
    parent_run_id: str | None = None,
    register_as: str | None = None,
) -> BundleRun:
    """Log the bundle as one run under the study's parent run; optionally register the model as `register_as`.

    The parent is `parent_run_id` when it exists in this store, else the one `setup_study_mirror`
    finds or creates for the study (e.g. a study searched with MLflow off, or another store).
    Raises `ConnectionError` when an http(s) store does not answer, and MLflow's errors as they come.
    """
    import mlflow

    if is_http(tracking_uri) and not http_reachable(tracking_uri, MLFLOW_PROBE_TIMEOUT_S):
        raise ConnectionError(f"nothing answers at {mask_secrets(tracking_uri)}")
    mlflow.set_tracking_uri(tracking_uri)
    client = tracking_client(tracking_uri)
    experiment_id, parent_run_id = _study_parent(client, tracking_uri, study_name, experiment_id, parent_run_id)
    tags = {
        names.TAG_STUDY: study_name,
        names.TAG_ROLE: ROLE_RETRAIN,
        names.TAG_TRIAL_NUMBER: str(content.metrics.get("trial_number")),
        names.TAG_FAMILY: content.config["family"],
        names.TAG_PARENT_RUN_ID: parent_run_id,
    }
    run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
    try:
        info = _log_run(client, run_id, content, register_as)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    version = info.registered_model_version
    return BundleRun(
        run_id=run_id,
        experiment_id=experiment_id,
        model_uri=info.model_uri,
        registered_version=str(version) if version is not None else None,
    )


def _study_parent(
    client: Any, tracking_uri: str, study_name: str, experiment_id: str | None, parent_run_id: str | None
) -> tuple[str, str]:
    from mlflow.exceptions import MlflowException

    from search.tracking.runs import setup_study_mirror

    if parent_run_id is not None:
        try:
            client.get_run(parent_run_id)
        except MlflowException:  # deleted, or the ids belong to another store
            parent_run_id = None
    if experiment_id is None or parent_run_id is None:
        return setup_study_mirror(tracking_uri=tracking_uri, study_name=study_name, tags={})
    return experiment_id, parent_run_id


def _log_run(client: Any, run_id: str, content: BundleContent, register_as: str | None) -> Any:
    import mlflow
    import onnx
    from mlflow.entities import Metric, Param
    from mlflow.models import infer_signature

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in bundle_metrics(content.metrics).items()],
        params=[Param(k, v) for k, v in bundle_params(content.config, content.metrics).items()],
        tags=[],
    )
    for path in content.artifact_paths:
        client.log_artifact(run_id, str(path), artifact_path=BUNDLE_ARTIFACT_DIR)
    example: np.ndarray | dict[str, np.ndarray] = (
        {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in content.example.items()}
        if isinstance(content.example, dict)
        else np.ascontiguousarray(content.example, dtype=np.float32)
    )
    with mlflow.start_run(run_id=run_id):
        return mlflow.onnx.log_model(
            onnx.load(str(content.onnx_path)),
            name=MODEL_ARTIFACT_NAME,
            signature=infer_signature(example, content.example_scores),
            input_example=example,
            # Given, not inferred: inference imports the model in a subprocess (~10 s) to find
            # what the ONNX flavour already knows it needs.
            pip_requirements=mlflow.onnx.get_default_pip_requirements(),
            registered_model_name=register_as,
        )
