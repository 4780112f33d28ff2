"""Typed settings of the orchestration, built by the CLI from flags and the environment.

A `WorkerSettings` is pickled into each spawned worker process: the storage URL and the MLflow URI, passwords
included, travel through that pipe and never appear on a command line. `repr` leaves them out, so a settings
object that reaches a log or a traceback shows no password.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WarmStartSettings:
    """Enqueue the `top` best configurations of study `study_name` (in `storage_url`) as the first trials."""

    study_name: str
    storage_url: str = field(repr=False)
    top: int = 5


@dataclass(frozen=True)
class StudySettings:
    """What `start` asks of a study: the values to create it with, or to check a resumed one against."""

    space: str
    study_name: str
    data_path: str
    storage_url: str = field(repr=False)
    # As given (flag or environment); None: the default store beside the study database; "off": no mirror.
    mlflow_uri: str | None = field(repr=False)
    trials: int
    epochs: int
    objective: str
    sampler: str
    pruner: str
    min_epochs: int
    seed: int | None
    max_params: int | None
    heartbeat_interval_s: int
    grace_period_s: int
    cv_folds: int = 0  # patient-grouped K-fold cross-validation over train+val; 0: the validation split
    selection: str = "smoothed"  # how a trial's curve becomes its value (search.training.curve)
    selection_window: int = 3
    fs: float | None = None  # the sampling rate, when the data's meta.json lacks it
    # Several objectives, quality first then costs (None: `objective` alone); constraints besides max_params.
    objectives: tuple[str, ...] | None = None
    max_flops: int | None = None
    max_latency_ms: float | None = None
    # An earlier study whose best configurations are this study's first trials (`search.optimize.warm_start`).
    warm_start: WarmStartSettings | None = field(default=None, repr=False)
    # Without a warm start, a new study's first trials are the space's starting points (spaces/starting.py).
    starting_points: bool = True
    artifact_dir: str | None = None  # the Optuna artifact store of the trials' learning curves
    # The fields the user set; a resumed study keeps its stored settings and reports only those it ignores.
    given: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WorkerSettings:
    """What one worker process needs besides its slot: the study, where it lives, and how to behave."""

    study_name: str
    storage_url: str = field(repr=False)
    mlflow_uri: str | None = field(default=None, repr=False)  # resolved tracking URI; None: no mirroring
    data_dir: str | None = None  # overrides the path stored in the study (same fingerprint required)
    timeout_s: float | None = None
    heartbeat_interval_s: int = 30
    grace_period_s: int = 90
    poll_interval_s: float = 2.0
    max_consecutive_invalid: int = 100
    mirror_close_timeout_s: float = 60.0  # at exit, how long the MLflow mirror may take to catch up
    # Who this worker is in a fleet (a Kubernetes Indexed Job's completion index): part of its sampler
    # seed's identity and stored on its trials; each process of a multi-slot worker appends its slot.
    worker_label: str | None = None
