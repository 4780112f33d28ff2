"""The export bundle: a retrained model as files a service can load without the study or the search.

DIR/model.pt      state_dict only (`torch.load(weights_only=True)`)
DIR/config.json   family, flat config, input shape, leads, sampling rate, normalisation, threshold
DIR/metrics.json  validation/test metrics, per-seed test metrics with mean/std, provenance, versions
DIR/model.onnx    the scoring graph (model + score head), dynamic batch axis, opset 17
DIR/README.md     what the model is, how to load it, and the data licence when it is MIT-BIH

The ONNX graph ends in the one score head, `search.training.scoring.ScoringModel`, that training and
`predict` use too, so ONNX and PyTorch give the same number (checked with onnxruntime before the
bundle is declared done). Normalisation stays outside the graph: it is stored in config.json and
`ecgsearch predict` applies it.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from torch import Tensor, nn

import ecgmodels
from search.data import NormStats
from search.errors import EXIT_DATA, EcgSearchError
from search.training.scoring import ScoringModel, score

BUNDLE_FORMAT = "ecgsearch-bundle/1"
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
ONNX_FILE = "model.onnx"
README_FILE = "README.md"
BUNDLE_FILES = (MODEL_FILE, CONFIG_FILE, METRICS_FILE, ONNX_FILE, README_FILE)

ONNX_OPSET = 17
ONNX_INPUT = "x"
ONNX_OUTPUT = "score"
# float32 through different kernels (MKL-DNN vs onnxruntime's) differs by ~1e-6; more means a wrong graph.
ONNX_TOLERANCE = 1e-4
# Enough real windows to exercise every kernel, few enough for an LSTM over 2000 steps to stay quick.
ONNX_CHECK_WINDOWS = 32

SCORE_PROBABILITY = "probability"
SCORE_RECONSTRUCTION = "reconstruction_error"

# Retrain runs are children of the study's parent run beside the trial runs, told apart by this role.
ROLE_RETRAIN = "retrain"
MLFLOW_PROBE_TIMEOUT_S = 5.0

# Meta entries longer than this (per-record tables) are left out of config.json.
META_VALUE_MAX_CHARS = 1000

VERSIONED_PACKAGES = ("ecgsearch", "torch", "optuna", "onnx", "onnxruntime", "mlflow", "numpy")

MITDB_ATTRIBUTION = """\
The training data is the MIT-BIH Arrhythmia Database (PhysioNet, doi:10.13026/C2F305), licensed
under the Open Data Commons Attribution License v1.0 (ODC-By). Anything that ships results derived
from it must cite:

- Moody GB, Mark RG. The impact of the MIT-BIH Arrhythmia Database. IEEE Eng in Med and Biol
  20(3):45-50 (2001).
- Goldberger AL et al. PhysioBank, PhysioToolkit, and PhysioNet: Components of a New Research
  Resource for Complex Physiologic Signals. Circulation 101(23):e215-e220 (2000).
"""


class BundleError(EcgSearchError):
    """A bundle folder that cannot be loaded; the message names the file and what was expected."""

    exit_code = EXIT_DATA


class OnnxExportError(RuntimeError):
    """The model could not be exported to ONNX, or the ONNX graph scores differently than PyTorch."""


@dataclass
class Bundle:
    """A loaded export bundle: the model in eval mode on the CPU and what is needed to score with it."""

    path: Path
    config: dict[str, Any]  # config.json as written
    model: nn.Module
    norm: NormStats
    threshold: float

    @property
    def family(self) -> str:
        return self.config["family"]

    @property
    def autoencoder(self) -> bool:
        return bool(self.config["autoencoder"])

    @property
    def n_channels(self) -> int:
        return int(self.config["n_channels"])

    @property
    def window_length(self) -> int:
        return int(self.config["window_length"])

    @property
    def score_kind(self) -> str:
        return self.config["score_kind"]

    def scoring_model(self) -> ScoringModel:
        return ScoringModel(self.model, self.autoencoder).eval()

    def score(self, X: Tensor, *, batch_size: int = 256, normalise: bool = True) -> np.ndarray:
        """Scores of raw windows `X` (N, leads, samples): normalised with the stored statistics first."""
        X = X.float()
        if normalise:
            X = self.norm.apply(X)
        return score(self.scoring_model(), X, batch_size=batch_size).numpy()


def onnx_scores(onnx_path: Path, X: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Scores from the ONNX graph through onnxruntime (CPU), as a float32 array (N,)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    X = np.ascontiguousarray(X, dtype=np.float32)
    parts = [
        session.run([ONNX_OUTPUT], {ONNX_INPUT: X[start : start + batch_size]})[0]
        for start in range(0, X.shape[0], batch_size)
    ]
    return np.concatenate(parts).astype(np.float32) if parts else np.empty(0, dtype=np.float32)


def export_onnx(model: nn.Module, *, family: str, autoencoder: bool, windows: Tensor, path: Path) -> float:
    """Write `ScoringModel(model)` as ONNX to `path` and check it on `windows` (normalised, real).

    Returns the largest absolute difference between onnxruntime's and PyTorch's scores; raises
    `OnnxExportError` naming the family when export fails or the difference exceeds ONNX_TOLERANCE.
    """
    if windows.dim() != 3 or windows.shape[0] == 0:
        raise ValueError(f"need at least one window (N, leads, samples) to check ONNX, got {tuple(windows.shape)}")
    scorer = ScoringModel(model.cpu(), autoencoder).eval()
    windows = windows[:ONNX_CHECK_WINDOWS].detach().float().cpu()
    # Two windows at export time, so no dimension of size 1 gets specialised into the graph.
    example = windows[:2] if windows.shape[0] >= 2 else windows.repeat(2, 1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
            # onnxscript (not a dependency); the TorchScript one exports every family here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                scorer,
                (example,),
                str(path),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
            )
    except Exception as error:
        raise OnnxExportError(
            f"model family {family!r} could not be exported to ONNX (opset {ONNX_OPSET}): "
            f"{type(error).__name__}: {error}"
        ) from error
    expected = score(scorer, windows).numpy()
    try:
        got = onnx_scores(path, windows.numpy())
    except Exception as error:
        raise OnnxExportError(
            f"the ONNX graph of model family {family!r} does not run in onnxruntime: {type(error).__name__}: {error}"
        ) from error
    if got.shape != expected.shape:
        raise OnnxExportError(
            f"the ONNX graph of model family {family!r} returns shape {got.shape}, PyTorch {expected.shape}"
        )
    difference = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
    if not difference <= ONNX_TOLERANCE:  # also catches NaN
        raise OnnxExportError(
            f"the ONNX graph of model family {family!r} scores differently than PyTorch on "
            f"{windows.shape[0]} real windows: max abs difference {difference:.3g} > {ONNX_TOLERANCE:g}"
        )
    return difference


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def is_mitdb(meta: dict[str, Any], source: str = "") -> bool:
    """Whether the dataset's meta (or source) says it was derived from the MIT-BIH database."""
    text = (json.dumps(meta, default=str) + " " + source).lower()
    return "mitdb" in text or "mit-bih" in text


def _first_meta(meta: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if meta.get(key) is not None:
            return meta[key]
    return None


def _summary_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The dataset's descriptive meta without its bulky per-record detail (that stays with the data)."""
    return {k: v for k, v in meta.items() if len(json.dumps(v, default=str)) <= META_VALUE_MAX_CHARS}


def bundle_config(
    *,
    config: dict[str, Any],
    n_channels: int,
    window_length: int,
    norm: NormStats,
    threshold: float,
    n_params: int,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The content of config.json: everything needed to rebuild the model and score new windows."""
    family = config["family"]
    autoencoder = ecgmodels.is_autoencoder(family)
    model_names = ecgmodels.model_param_names(family)
    leads = _first_meta(meta, "leads", "lead_names", "channels")
    sampling_rate = _first_meta(meta, "sampling_rate", "sampling_rate_hz", "fs", "sample_rate")
    score_kind = SCORE_RECONSTRUCTION if autoencoder else SCORE_PROBABILITY
    return {
        "format": BUNDLE_FORMAT,
        "family": family,
        "autoencoder": autoencoder,
        "config": config,
        "model_params": {k: v for k, v in config.items() if k in model_names},
        "n_params": n_params,
        "n_channels": n_channels,
        "leads": list(leads) if isinstance(leads, list | tuple) else None,
        "sampling_rate_hz": float(sampling_rate) if sampling_rate is not None else None,
        "window_length": window_length,
        "normalisation": norm.to_dict(),
        "threshold": float(threshold),
        "score_kind": score_kind,
        "input": {
            "name": ONNX_INPUT,
            "shape": ["batch", n_channels, window_length],
            "dtype": "float32",
            "description": "ECG windows (batch, leads, samples), normalised per lead with "
            "`normalisation` ((x - mean) / std) before they reach the model",
        },
        "output": {
            "name": ONNX_OUTPUT,
            "shape": ["batch"],
            "dtype": "float32",
            "description": (
                "per-window reconstruction MSE (higher = more anomalous)"
                if autoencoder
                else "per-window probability that the window is anomalous (sigmoid of the logit)"
            )
            + "; label 1 (anomalous) when score >= threshold",
        },
        "onnx": {"file": ONNX_FILE, "opset": ONNX_OPSET, "input": ONNX_INPUT, "output": ONNX_OUTPUT},
        "data_meta": _summary_meta(meta),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    # NaN (ROC-AUC of a one-class split) is not JSON: write it as null.
    path.write_text(json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_bundle(
    out: Path,
    *,
    model: nn.Module,
    config: dict[str, Any],
    norm: NormStats,
    threshold: float,
    meta: dict[str, Any],
    source: str,
    metrics: dict[str, Any],
    check_windows: Tensor,
) -> dict[str, Any]:
    """Write every bundle file into `out` and return config.json's content.

    `check_windows` are real, normalised windows (e.g. from the test split) on which the ONNX graph
    must match PyTorch; the measured difference is stored in metrics.json under `onnx_max_abs_diff`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    n_channels, window_length = int(check_windows.shape[1]), int(check_windows.shape[2])
    cfg = bundle_config(
        config=config,
        n_channels=n_channels,
        window_length=window_length,
        norm=norm,
        threshold=threshold,
        n_params=ecgmodels.count_params(model),
        meta=meta,
    )
    torch.save(model.state_dict(), out / MODEL_FILE)
    difference = export_onnx(
        model, family=cfg["family"], autoencoder=cfg["autoencoder"], windows=check_windows, path=out / ONNX_FILE
    )
    metrics = {**metrics, "onnx_max_abs_diff": difference, "versions": package_versions()}
    write_json(out / CONFIG_FILE, cfg)
    write_json(out / METRICS_FILE, metrics)
    (out / README_FILE).write_text(render_readme(cfg, metrics, out_name=out.name, mitdb=is_mitdb(meta, source)))
    return cfg


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4f}"
    if value is None:
        return "n/a"
    return str(value)


def render_readme(cfg: dict[str, Any], metrics: dict[str, Any], *, out_name: str, mitdb: bool) -> str:
    family = cfg["family"]
    lines = [
        f"# {family} ECG anomaly model (ecgsearch export)",
        "",
        f"A `{family}` {'autoencoder' if cfg['autoencoder'] else 'classifier'} with "
        f"{cfg['n_params']:,} trainable parameters, retrained from scratch from trial "
        f"{metrics.get('trial_number')} of study `{metrics.get('study')}`.",
        f"Input: windows of {cfg['n_channels']} lead(s)"
        + (f" ({', '.join(cfg['leads'])})" if cfg["leads"] else "")
        + f" x {cfg['window_length']} samples"
        + (f" at {cfg['sampling_rate_hz']:g} Hz" if cfg["sampling_rate_hz"] else "")
        + ", normalised per lead with the statistics in `config.json`.",
        f"Output: {cfg['output']['description']}. Threshold: {cfg['threshold']:.6g}.",
        "",
        "## Metrics (test split, evaluated once)",
        "",
        "| metric | exported model | mean ± std over seeds |",
        "| --- | --- | --- |",
    ]
    summary = metrics.get("test_summary", {})
    for name in ("roc_auc", "pr_auc", "f1_macro", "f1_0", "f1_1", "precision_macro", "recall_macro", "accuracy"):
        if name in metrics.get("test", {}):
            spread = summary.get(name)
            spread_text = f"{_fmt(spread['mean'])} ± {_fmt(spread['std'])}" if spread else "n/a"
            lines.append(f"| {name} | {_fmt(metrics['test'][name])} | {spread_text} |")
    matrix = metrics.get("test", {}).get("confusion_matrix")
    if matrix:
        lines += ["", f"Confusion matrix (rows true 0/1, columns predicted 0/1): {matrix}."]
    lines += [
        f"Seeds trained: {len(metrics.get('seeds', []))}; exported seed {metrics.get('exported_seed')} "
        "(best on validation).",
        "",
        "## Configuration",
        "",
        "The trial's flat config, with the retraining budget and the exported seed:",
        "",
        "| key | value |",
        "| --- | --- |",
        *(f"| {key} | `{json.dumps(value)}` |" for key, value in cfg["config"].items()),
        "",
        "## Loading it",
        "",
        "With ecgsearch installed:",
        "",
        "```bash",
        f"ecgsearch predict --model {out_name} --input windows.npy --out scores.csv",
        "```",
        "",
        "```python",
        "from search.ship.bundle import load_bundle",
        f'bundle = load_bundle("{out_name}")',
        "scores = bundle.score(X)  # X: raw float tensor (N, leads, samples)",
        "labels = scores >= bundle.threshold",
        "```",
        "",
        "PyTorch from the files alone (`ecgmodels` for the architecture):",
        "",
        "```python",
        "import json, torch, ecgmodels",
        f'cfg = json.load(open("{out_name}/config.json"))',
        'model = ecgmodels.build(cfg["family"], n_channels=cfg["n_channels"], '
        'seq_len=cfg["window_length"], fs=cfg["sampling_rate_hz"], **cfg["model_params"])',
        f'model.load_state_dict(torch.load("{out_name}/model.pt", weights_only=True))',
        "model.eval()",
        'mean = torch.tensor(cfg["normalisation"]["mean"]).view(1, -1, 1)',
        'std = torch.tensor(cfg["normalisation"]["std"]).view(1, -1, 1)',
        "x = (X - mean) / std",
        (
            "score = (model(x) - x).pow(2).mean(dim=(1, 2))  # reconstruction error"
            if cfg["autoencoder"]
            else "score = torch.sigmoid(model(x))  # probability of an anomalous window"
        ),
        "```",
        "",
        "ONNX (the graph already contains the score head; normalise first, `cfg` as above):",
        "",
        "```python",
        "import numpy as np, onnxruntime",
        f'session = onnxruntime.InferenceSession("{out_name}/model.onnx")',
        'x = ((X - np.array(cfg["normalisation"]["mean"])[None, :, None])',
        '     / np.array(cfg["normalisation"]["std"])[None, :, None]).astype(np.float32)',
        f'score = session.run(["{ONNX_OUTPUT}"], {{"{ONNX_INPUT}": x}})[0]',
        "```",
        "",
        "## Provenance",
        "",
        f"Data fingerprint `{metrics.get('data_fingerprint')}`; versions: "
        + ", ".join(f"{k} {v}" for k, v in metrics.get("versions", {}).items() if v)
        + ".",
    ]
    if mitdb:
        lines += ["", "## Data licence and citations", "", MITDB_ATTRIBUTION.rstrip()]
    return "\n".join(lines) + "\n"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"{path} is missing; expected an ecgsearch export bundle ({', '.join(BUNDLE_FILES)})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object")
    return data


def load_bundle(path: str | Path) -> Bundle:
    """Load an export bundle: model rebuilt from config.json, weights from model.pt, in eval mode."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"--model {path}: not a folder; expected an ecgsearch export bundle folder")
    cfg = _read_json(path / CONFIG_FILE)
    required = (
        "family",
        "model_params",
        "n_channels",
        "window_length",
        "normalisation",
        "threshold",
        "autoencoder",
        "score_kind",
    )
    missing = [key for key in required if key not in cfg]
    if missing:
        raise BundleError(f"{path / CONFIG_FILE} lacks the field(s) {', '.join(missing)}")
    try:
        model = ecgmodels.build(
            cfg["family"],
            n_channels=int(cfg["n_channels"]),
            seq_len=int(cfg["window_length"]),
            fs=cfg.get("sampling_rate_hz"),
            **cfg["model_params"],
        )
    except ValueError as error:
        raise BundleError(f"{path / CONFIG_FILE}: cannot rebuild the model ({error})") from None
    weights = path / MODEL_FILE
    if not weights.is_file():
        raise BundleError(f"{weights} is missing; expected the model's state_dict")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, OSError, EOFError) as error:
        raise BundleError(f"{weights} does not fit the model in {CONFIG_FILE}: {error}") from None
    model.eval()
    return Bundle(
        path=path,
        config=cfg,
        model=model,
        norm=NormStats.from_dict(cfg["normalisation"]),
        threshold=float(cfg["threshold"]),
    )


@dataclass
class MlflowLogResult:
    run_id: str
    experiment_id: str
    model_uri: str
    registered_version: str | None


def _mlflow_params(cfg: dict[str, Any], metrics: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    from search.tracking.names import CONFIG_PARAM_PREFIX

    params = {
        f"{CONFIG_PARAM_PREFIX}{k}": json.dumps(v) if isinstance(v, list) else v for k, v in cfg["config"].items()
    }
    params |= {
        "n_params": cfg["n_params"],
        "threshold": cfg["threshold"],
        "exported_seed": metrics.get("exported_seed"),
        "seeds": len(metrics.get("seeds", [])),
    }
    return [Param(key, str(value)) for key, value in params.items()]


def _mlflow_metrics(metrics: dict[str, Any]) -> list[Any]:
    """Test and validation metrics of the exported seed, and mean/std over seeds; finite numbers only."""
    from mlflow.entities import Metric

    numbers = {f"test_{k}": v for k, v in metrics.get("test", {}).items()}
    numbers |= {f"val_{k}": v for k, v in metrics.get("validation", {}).items()}
    for name, stats in metrics.get("test_summary", {}).items():
        numbers[f"test_mean_{name}"] = stats.get("mean")
        numbers[f"test_std_{name}"] = stats.get("std")
    now = int(time.time() * 1000)
    return [
        Metric(key, float(value), now, 0)
        for key, value in numbers.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ]


def log_bundle_to_mlflow(
    bundle_dir: Path,
    *,
    tracking_uri: str,
    study_name: str,
    run_name: str,
    example: np.ndarray,
    experiment_id: str | None = None,
    parent_run_id: str | None = None,
    register_as: str | None = None,
) -> MlflowLogResult:
    """Log the bundle to MLflow: the ONNX model (mlflow.onnx flavour, signature and input example),
    the bundle files as artifacts, config params and test metrics; optionally register the model.

    The run is a child of the study's parent run: `parent_run_id` when it exists in this store,
    else the one `search.tracking` finds or creates for the study (e.g. a study searched with MLflow
    off). The ONNX flavour serves with onnx/onnxruntime alone, unlike the pickled PyTorch one that
    needs our model code importable.
    """
    import mlflow
    import onnx
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    from search.tracking import names, setup_study_mirror
    from search.tracking.uri import http_reachable, is_http

    if is_http(tracking_uri) and not http_reachable(tracking_uri, MLFLOW_PROBE_TIMEOUT_S):
        raise ConnectionError(f"nothing answers at {urlsplit(tracking_uri).netloc.rsplit('@', 1)[-1]}")
    bundle_dir = Path(bundle_dir)
    cfg = json.loads((bundle_dir / CONFIG_FILE).read_text())
    metrics = json.loads((bundle_dir / METRICS_FILE).read_text())
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    if parent_run_id is not None:
        try:
            client.get_run(parent_run_id)
        except MlflowException:  # deleted, or the ids belong to another store
            parent_run_id = None
    if experiment_id is None or parent_run_id is None:
        experiment_id, parent_run_id = setup_study_mirror(tracking_uri=tracking_uri, study_name=study_name, tags={})

    example = np.ascontiguousarray(example, dtype=np.float32)
    signature = infer_signature(example, onnx_scores(bundle_dir / ONNX_FILE, example))
    tags = {
        names.TAG_STUDY: study_name,
        names.TAG_ROLE: ROLE_RETRAIN,
        names.TAG_TRIAL_NUMBER: str(metrics.get("trial_number")),
        names.TAG_FAMILY: cfg["family"],
        names.TAG_PARENT_RUN_ID: parent_run_id,
    }
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    try:
        client.log_batch(run_id, metrics=_mlflow_metrics(metrics), params=_mlflow_params(cfg, metrics))
        for name in BUNDLE_FILES:
            if name != ONNX_FILE:  # the model itself is logged as the flavour below
                client.log_artifact(run_id, str(bundle_dir / name), artifact_path="bundle")
        with mlflow.start_run(run_id=run_id):
            info = mlflow.onnx.log_model(
                onnx.load(str(bundle_dir / ONNX_FILE)),
                name="model",
                signature=signature,
                input_example=example,
                # Given, not inferred: inference imports the model in a subprocess (~10 s) to find
                # what the ONNX flavour already knows it needs.
                pip_requirements=mlflow.onnx.get_default_pip_requirements(),
                registered_model_name=register_as,
            )
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    version_ = info.registered_model_version
    return MlflowLogResult(
        run_id=run_id,
        experiment_id=experiment_id,
        model_uri=info.model_uri,
        registered_version=str(version_) if version_ is not None else None,
    )
