"""What a study is: its definition lives in the study's user attributes, the single source of truth.

`ecgsearch worker` needs only a storage and a study name: it reads the definition back from
the database and refuses to join when its data or code versions disagree with it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import optuna

from studies.masking import mask_secrets
from studies.pruners import make_pruner
from studies.samplers import make_sampler

USER_ATTR_KEY = "ecgsearch"
# Fields that make two studies of one name different searches: resuming must not change them.
IDENTITY_FIELDS = (
    "space",
    "objective",
    "direction",
    "data_fingerprint",
    "n_channels",
    "seq_len",
    "cv_folds",
    "selection",
    "selection_window",
    "objectives",
)
# Cost objectives and constraints, all minimised; measured by `search.training.cost` before a trial trains.
COST_OBJECTIVES = ("params", "flops", "latency_ms")
# The constraint on each cost: the StudyDefinition field holding its limit.
CONSTRAINT_FIELDS = {"params": "max_params", "flops": "max_flops", "latency_ms": "max_latency_ms"}
# Another process may have created the study a moment ago and not yet written its definition.
_DEFINITION_WAIT_S = 10.0


# Exit code of study errors (`search.errors.EXIT_STUDY`); studies cannot import search, so it is
# restated here as the attribute the CLI reads.
EXIT_STUDY = 5


class StudyMismatch(Exception):
    """A study and what is asked of it disagree; `differences` lists each `field: stored vs given`."""

    exit_code = EXIT_STUDY

    def __init__(self, message: str, differences: list[str] | None = None) -> None:
        super().__init__(message)
        self.differences = differences or []


class StudyNotFound(LookupError):
    """No study of that name in the storage; the message lists the studies that exist."""

    exit_code = EXIT_STUDY


class NotAnEcgsearchStudy(StudyMismatch):
    """The study exists but was not created by ecgsearch (no definition in its user attributes)."""


@dataclass
class StudyDefinition:
    space: str
    data_path: str
    data_fingerprint: str
    n_channels: int
    seq_len: int
    objective: str
    direction: str
    epochs: int
    sampler: str
    pruner: str
    seed: int | None
    max_params: int | None
    trials_budget: int | None
    ecgsearch_version: str
    optuna_version: str
    torch_version: str
    created_at: str = dataclasses.field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    mlflow_experiment_id: str | None = None
    # Stored masked: the database is readable by every worker and the dashboard; workers take
    # credentials for MLflow from their own environment.
    mlflow_tracking_uri: str | None = None
    mlflow_parent_run_id: str | None = None
    # The pruner never stops a trial before this many epochs.
    min_epochs: int = 1
    # Patient-grouped K-fold cross-validation over train+val (0: the data's own validation split). The
    # folds themselves are stored beside the definition (`write_folds`), so every worker uses the same.
    cv_folds: int = 0
    # How a trial's per-epoch curve becomes its value (search.training.curve): studies created before
    # this setting existed valued a trial by its best epoch.
    selection: str = "best"
    selection_window: int = 3
    # The sampling rate (Hz) the models are built for (filters of baseline removal and beat timing);
    # None for studies created before it was recorded, whose spaces never offered those options.
    fs: float | None = None
    # Whether the data carries the patient of every window (groups_*.pt): only then do spaces offer
    # record-relative timing, which needs them at prediction time too. False for studies created before.
    patient_ids: bool = False
    # Several objectives: the quality metric first, then costs (`COST_OBJECTIVES`); None for a study of the
    # one objective `objective` (every study created before multi-objective search existed).
    objectives: list[str] | None = None
    # Constraints besides `max_params`; None: no limit.
    max_flops: int | None = None
    max_latency_ms: float | None = None
    # Where a warm-started study's first trials came from: {study, storage (masked), top, taken: [...]}.
    warm_start: dict[str, Any] | None = None
    # Folder of the Optuna artifact store the workers write each trial's learning curve to and the dashboard
    # serves (a FileSystemArtifactStore); None: no artifacts.
    artifact_dir: str | None = None

    def __post_init__(self) -> None:
        if self.mlflow_tracking_uri is not None:
            self.mlflow_tracking_uri = mask_secrets(self.mlflow_tracking_uri)
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"StudyDefinition.direction must be 'maximize' or 'minimize', got {self.direction!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def is_multi_objective(self) -> bool:
        return bool(self.objectives) and len(self.objectives) > 1

    def objective_names(self) -> list[str]:
        """The study's objectives in the order of a trial's values: the quality metric, then any costs."""
        return list(self.objectives) if self.is_multi_objective else [self.objective]

    def cost_objectives(self) -> list[str]:
        return [name for name in self.objective_names() if name in COST_OBJECTIVES]

    def directions(self) -> list[str]:
        return [self.direction if name == self.objective else "minimize" for name in self.objective_names()]

    def metric_names(self) -> list[str]:
        """What the dashboard, `status` and the report call each value: `val_roc_auc`, `params`, …"""
        return [f"val_{name}" if name == self.objective else name for name in self.objective_names()]

    def constraint_limits(self) -> dict[str, float]:
        """Each constrained cost and its limit (a trial is feasible when every cost is at most its limit)."""
        limits = {cost: getattr(self, field) for cost, field in CONSTRAINT_FIELDS.items()}
        return {cost: float(limit) for cost, limit in limits.items() if limit is not None}

    def costs_to_measure(self) -> set[str]:
        return {"params", *self.cost_objectives(), *self.constraint_limits()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyDefinition:
        """Unknown keys (written by a newer ecgsearch) are ignored so `check_compatible` can report it."""
        if not isinstance(data, dict):
            raise ValueError(f"study definition must be a JSON object, got {type(data).__name__}")
        fields = {field.name: field for field in dataclasses.fields(cls)}
        required = [
            name
            for name, field in fields.items()
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"study definition lacks the field(s) {', '.join(missing)}")
        return cls(**{key: value for key, value in data.items() if key in fields})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudyDefinition:
        return cls.from_dict(json.loads(text))

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        return make_sampler(self.sampler, seed=self.seed)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        return make_pruner(self.pruner, min_epochs=self.min_epochs, max_epochs=self.epochs)


def write_definition(study: optuna.Study, definition: StudyDefinition) -> None:
    """Store `definition` in the study (e.g. after the MLflow experiment ids became known)."""
    study.set_user_attr(USER_ATTR_KEY, definition.to_dict())


FOLDS_ATTR_KEY = "ecgsearch_folds"


def write_folds(study: optuna.Study, folds: list[int]) -> None:
    """Store the cross-validation fold of every train+val window with the study (beside its definition,
    which stays small: every worker reads the definition often and the folds once)."""
    study.set_user_attr(FOLDS_ATTR_KEY, [int(fold) for fold in folds])


def read_folds(study: optuna.Study) -> list[int]:
    """The stored fold of every train+val window; `StudyMismatch` when the study has none."""
    folds = study.user_attrs.get(FOLDS_ATTR_KEY)
    if not isinstance(folds, list) or not folds:
        raise StudyMismatch(
            f"study {study.study_name!r} is cross-validated but holds no folds in user attribute "
            f"{FOLDS_ATTR_KEY!r}; it was not created by this ecgsearch"
        )
    return folds


def read_definition(study: optuna.Study) -> StudyDefinition:
    """The definition stored in `study`; `NotAnEcgsearchStudy` when it has none or it is unreadable."""
    stored = study.user_attrs.get(USER_ATTR_KEY)
    if stored is None:
        raise NotAnEcgsearchStudy(
            f"Study {study.study_name!r} exists but was not created by ecgsearch (its user "
            f"attribute {USER_ATTR_KEY!r} is missing). Start a new study under another --study "
            "name, or delete this one."
        )
    try:
        return StudyDefinition.from_dict(stored)
    except (TypeError, ValueError) as error:
        raise NotAnEcgsearchStudy(
            f"Study {study.study_name!r} has an unreadable ecgsearch definition in user attribute "
            f"{USER_ATTR_KEY!r}: {error}."
        ) from None


def create_or_load_study(
    storage: optuna.storages.BaseStorage, name: str, definition: StudyDefinition
) -> tuple[optuna.Study, StudyDefinition, bool]:
    """Create study `name` from `definition`, or load it and return the STORED definition.

    Returns `(study, definition_in_effect, created)`. The sampler and pruner of a loaded study are
    rebuilt from the stored definition. A stored study that differs in an identity field (space,
    objective, direction, data) raises `StudyMismatch` listing each difference.
    """
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            directions=definition.directions(),
            sampler=definition.make_sampler(),
            pruner=definition.make_pruner(),
        )
    except optuna.exceptions.DuplicatedStudyError:
        pass
    else:
        write_definition(study, definition)
        # The dashboard, `status` and the report name each value after it rather than "Objective 0".
        study.set_metric_names(definition.metric_names())
        return study, definition, True

    study = optuna.load_study(storage=storage, study_name=name)
    stored = _wait_for_definition(study)
    differences = definition_differences(stored, definition)
    if differences:
        raise StudyMismatch(
            f"Study {name!r} already exists with a different definition: "
            + "; ".join(differences)
            + ". Resume it with the same settings, or pick a new --study name.",
            differences,
        )
    study.sampler, study.pruner = stored.make_sampler(), stored.make_pruner()
    return study, stored, False


def load_study_with_definition(storage: optuna.storages.BaseStorage, name: str) -> tuple[optuna.Study, StudyDefinition]:
    """Load study `name` with the sampler and pruner its stored definition names."""
    try:
        study = optuna.load_study(storage=storage, study_name=name)
    except KeyError:
        existing = sorted(optuna.get_all_study_names(storage=storage))
        listing = ", ".join(existing) if existing else "none yet (create one with `ecgsearch start`)"
        raise StudyNotFound(f"No study named {name!r} in this storage. Existing studies: {listing}.") from None
    definition = read_definition(study)
    # Set on the loaded study rather than loading it a second time with them.
    study.sampler, study.pruner = definition.make_sampler(), definition.make_pruner()
    return study, definition


def definition_differences(stored: StudyDefinition, given: StudyDefinition) -> list[str]:
    """`field: stored X vs given Y` for every identity field that differs."""
    return [
        f"{field}: stored {getattr(stored, field)!r} vs given {getattr(given, field)!r}"
        for field in IDENTITY_FIELDS
        if getattr(stored, field) != getattr(given, field)
    ]


def check_compatible(definition: StudyDefinition, *, data_fingerprint: str, versions: dict[str, str]) -> list[str]:
    """Why a worker with this data and these versions must not join; empty when it may.

    `versions` holds `ecgsearch` and `optuna` (other keys are ignored). The data must be the
    same, ecgsearch must agree in major.minor (configs and metrics must mean the same), and
    Optuna exactly (every worker must write the same timestamps and sampler state).
    """
    differences = []
    if data_fingerprint != definition.data_fingerprint:
        differences.append(
            f"data_fingerprint: study {definition.data_fingerprint[:12]}… vs this worker "
            f"{data_fingerprint[:12]}… (the --data folder holds different tensors than "
            f"{definition.data_path})"
        )
    ecgsearch = versions.get("ecgsearch")
    if ecgsearch is None or _major_minor(ecgsearch) != _major_minor(definition.ecgsearch_version):
        differences.append(
            f"ecgsearch_version: study {definition.ecgsearch_version} vs this worker {ecgsearch} "
            "(major.minor must match)"
        )
    optuna_version = versions.get("optuna")
    if optuna_version != definition.optuna_version:
        differences.append(
            f"optuna_version: study {definition.optuna_version} vs this worker {optuna_version} (must match exactly)"
        )
    return differences


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _wait_for_definition(study: optuna.Study) -> StudyDefinition:
    deadline = time.monotonic() + _DEFINITION_WAIT_S
    while True:
        try:
            return read_definition(study)
        except NotAnEcgsearchStudy:
            # Only a study that is brand new (no trials) can still be waiting for its definition.
            if time.monotonic() >= deadline or study.get_trials(deepcopy=False):
                raise
            time.sleep(0.5)
