"""The export bundle: a retrained model as files a service can load without the study or the search.

DIR/model.pt      weights only (`torch.load(weights_only=True)`): the model's state_dict, or for an
                  ensemble a list of state_dicts, one per seed in config.json's `seeds` order
DIR/config.json   family, flat config, input shape, leads, sampling rate, normalisation, threshold,
                  `ensemble` (number of models averaged, null for one model), `seeds` and, for the
                  ensemble of a cross-validated study's fold models, `folds` (the fold each member held out)
DIR/metrics.json  validation/test metrics, per-seed metrics with mean/std, provenance, versions
DIR/model.onnx    the scoring graph (model(s) + score head), dynamic batch axis (`search.ship.onnx`)
DIR/README.md     the model card (`search.ship.model_card`)

Normalisation stays outside the graph: it is stored in config.json and `Bundle.score` (and so
`ecgsearch predict`) applies it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import ecgmodels
from search.data import NormStats
from search.errors import EXIT_DATA, EcgSearchError
from search.ship.ensemble import EnsembleScoringModel
from search.ship.model_card import is_mitdb, render_model_card
from search.ship.onnx import ONNX_INPUT, ONNX_OPSET, ONNX_OUTPUT, ONNX_RECORD_RR, export_onnx
from search.training.scoring import ScoringModel, score
from search.versions import package_versions

BUNDLE_FORMAT = "ecgsearch-bundle/1"
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
ONNX_FILE = "model.onnx"
README_FILE = "README.md"
BUNDLE_FILES = (MODEL_FILE, CONFIG_FILE, METRICS_FILE, ONNX_FILE, README_FILE)

SCORE_PROBABILITY = "probability"
SCORE_RECONSTRUCTION = "reconstruction_error"

# Meta entries longer than this (per-record tables) are left out of config.json.
META_VALUE_MAX_CHARS = 1000

REQUIRED_CONFIG_FIELDS = (
    "family",
    "model_params",
    "n_channels",
    "window_length",
    "normalisation",
    "threshold",
    "autoencoder",
    "score_kind",
)


class BundleError(EcgSearchError):
    """A bundle folder that cannot be loaded; the message names the file and what was expected."""

    exit_code = EXIT_DATA


@dataclass
class Bundle:
    """A loaded export bundle: its scoring model in eval mode on the CPU and what is needed to use it."""

    path: Path
    config: dict[str, Any]  # config.json as written
    scorer: ScoringModel | EnsembleScoringModel  # windows (normalised) -> scores
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

    @property
    def record_relative(self) -> bool:
        """Whether the model takes each window's record RR (record-relative timing): predict needs patient ids."""
        return self.config.get("record_rr") is not None

    @property
    def ensemble(self) -> int | None:
        """How many models the score averages; None for a single model."""
        return self.config.get("ensemble")

    def score(
        self, X: Tensor, *, groups: Tensor | None = None, batch_size: int = 256, normalise: bool = True
    ) -> np.ndarray:
        """Scores of raw windows `X` (N, leads, samples): normalised with the stored statistics first. A model
        with record-relative timing (`record_relative`) needs `groups`, the patient of each window."""
        X, record_rr = self.model_inputs(X, groups=groups, normalise=normalise)
        return score(self.scorer, X, record_rr=record_rr, batch_size=batch_size).numpy()

    def model_inputs(
        self, X: Tensor, *, groups: Tensor | None = None, normalise: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """What the scoring model (and the ONNX graph) takes for raw windows `X`: the windows normalised with
        the stored statistics, and each window's record RR where the model uses record-relative timing
        (else None), computed from the normalised windows of the same patient (`groups`) as in training."""
        X = X.float()
        if normalise:
            X = self.norm.apply(X)
        return X, ecgmodels.record_rr_for(self.scorer, X, groups)


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
    seeds: Sequence[int],
    n_channels: int,
    window_length: int,
    norm: NormStats,
    threshold: float,
    n_params: int,
    meta: dict[str, Any],
    record_relative: bool = False,
    folds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The content of config.json: everything needed to rebuild the model(s) and score new windows
    (`record_relative`: the model takes each window's record RR as a second input; `folds`: the fold each
    member of a fold ensemble held out)."""
    family = config["family"]
    autoencoder = ecgmodels.is_autoencoder(family)
    model_names = ecgmodels.model_param_names(family)
    leads = _first_meta(meta, "leads", "lead_names", "channels")
    sampling_rate = _first_meta(meta, "fs", "sampling_rate", "sampling_rate_hz", "sample_rate")
    ensemble = len(seeds) if len(seeds) > 1 else None
    score_text = (
        "per-window reconstruction MSE (higher = more anomalous)"
        if autoencoder
        else "per-window probability that the window is anomalous (sigmoid of the logit)"
    )
    if ensemble:
        members = "one per cross-validation fold and seed" if folds is not None else "one per seed"
        score_text = f"the mean over {ensemble} models ({members}) of the {score_text}"
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
        "score_kind": SCORE_RECONSTRUCTION if autoencoder else SCORE_PROBABILITY,
        "ensemble": ensemble,
        "seeds": list(seeds),
        "folds": list(folds) if folds is not None else None,
        "input": {
            "name": ONNX_INPUT,
            "shape": ["batch", n_channels, window_length],
            "dtype": "float32",
            "description": "ECG windows (batch, leads, samples), normalised per lead with "
            "`normalisation` ((x - mean) / std; with zero_flat_leads, a lead constant over a window is 0 there) "
            "before they reach the model",
        },
        "output": {
            "name": ONNX_OUTPUT,
            "shape": ["batch"],
            "dtype": "float32",
            "description": score_text + "; label 1 (anomalous) when score >= threshold",
        },
        "record_rr": _record_rr_input() if record_relative else None,
        "onnx": {
            "file": ONNX_FILE,
            "opset": ONNX_OPSET,
            "input": ONNX_INPUT,
            "output": ONNX_OUTPUT,
            **({"record_rr_input": ONNX_RECORD_RR} if record_relative else {}),
        },
        "data_meta": _summary_meta(meta),
    }


def _record_rr_input() -> dict[str, Any]:
    return {
        "name": ONNX_RECORD_RR,
        "shape": ["batch"],
        "dtype": "float32",
        "description": "the second input (record-relative timing): for each window, the median R-R interval "
        "in seconds of its patient's windows, ecgmodels.record_rr(normalised windows, patient ids, fs); "
        "`ecgsearch predict --groups FILE` computes it from the patient id of each window",
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


def make_scorer(models: Sequence[nn.Module], autoencoder: bool) -> ScoringModel | EnsembleScoringModel:
    """The scoring model of one model, or the mean-score ensemble of several."""
    if len(models) == 1:
        return ScoringModel(models[0], autoencoder)
    return EnsembleScoringModel(models, autoencoder)


def write_bundle(
    out: Path,
    *,
    models: Sequence[nn.Module],
    seeds: Sequence[int],
    config: dict[str, Any],
    norm: NormStats,
    threshold: float,
    meta: dict[str, Any],
    source: str,
    metrics: dict[str, Any],
    check_windows: Tensor,
    check_record_rr: Tensor | None = None,
    folds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Write every bundle file into `out` and return config.json's content.

    `models` (one per seed in `seeds`; with `folds`, the fold each held out) are exported as one model, or
    as the ensemble of their mean score when there are several. `check_windows` are real, normalised
    windows (e.g. from the test split; with `check_record_rr`, their record RR, for a model with
    record-relative timing) on which the ONNX graph must match PyTorch; the measured difference is stored
    in metrics.json under `onnx_max_abs_diff`.
    """
    if len(models) != len(seeds) or not models:
        raise ValueError(f"need one seed per model and at least one model (got {len(models)} models, seeds {seeds})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = [model.cpu().eval() for model in models]
    cfg = bundle_config(
        config=config,
        seeds=seeds,
        n_channels=int(check_windows.shape[1]),
        window_length=int(check_windows.shape[2]),
        norm=norm,
        threshold=threshold,
        n_params=sum(ecgmodels.count_params(model) for model in models),
        meta=meta,
        record_relative=ecgmodels.uses_record_rr(models[0]),
        folds=folds,
    )
    states = [model.state_dict() for model in models]
    torch.save(states if cfg["ensemble"] else states[0], out / MODEL_FILE)
    difference = export_onnx(
        make_scorer(models, cfg["autoencoder"]),
        family=cfg["family"],
        windows=check_windows,
        record_rr=check_record_rr,
        path=out / ONNX_FILE,
    )
    metrics = {**metrics, "onnx_max_abs_diff": difference, "versions": package_versions()}
    write_json(out / CONFIG_FILE, cfg)
    write_json(out / METRICS_FILE, metrics)
    card = render_model_card(cfg, metrics, bundle_name=out.name, mitdb=is_mitdb(meta, source))
    (out / README_FILE).write_text(card)
    return cfg


def read_json(path: Path) -> dict[str, Any]:
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
    """Load an export bundle: model(s) rebuilt from config.json, weights from model.pt, in eval mode."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"--model {path}: not a folder; expected an ecgsearch export bundle folder")
    cfg = read_json(path / CONFIG_FILE)
    missing = [key for key in REQUIRED_CONFIG_FIELDS if key not in cfg]
    if missing:
        raise BundleError(f"{path / CONFIG_FILE} lacks the field(s) {', '.join(missing)}")
    weights = path / MODEL_FILE
    if not weights.is_file():
        raise BundleError(f"{weights} is missing; expected the model's state_dict")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as error:
        raise BundleError(f"{weights} cannot be read as weights: {error}") from None
    ensemble = cfg.get("ensemble")
    states = state if ensemble else [state]
    if ensemble and (not isinstance(states, list) or len(states) != ensemble):
        raise BundleError(
            f"{weights} does not fit {CONFIG_FILE}: expected a list of {ensemble} state_dicts (ensemble: {ensemble})"
        )
    models = [_rebuild(path, cfg, member_state) for member_state in states]
    return Bundle(
        path=path,
        config=cfg,
        scorer=make_scorer(models, bool(cfg["autoencoder"])).eval(),
        norm=NormStats.from_dict(cfg["normalisation"]),
        threshold=float(cfg["threshold"]),
    )


def _rebuild(path: Path, cfg: dict[str, Any], state: Any) -> nn.Module:
    """One model of config.json's architecture holding `state`, in eval mode."""
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
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise BundleError(f"{path / MODEL_FILE} does not fit the model in {CONFIG_FILE}: {error}") from None
    return model.eval()
