"""Study lifecycle: storage URLs, create/load/resume, sampler and pruner factories, summaries.

Imports optuna and sqlalchemy only (rich is imported inside `render_summary`).
"""

from studies.definition import (
    USER_ATTR_KEY,
    NotAnEcgsearchStudy,
    StudyDefinition,
    StudyMismatch,
    StudyNotFound,
    check_compatible,
    count_trials,
    create_or_load_study,
    load_study_with_definition,
    read_definition,
    trials_remaining,
    trials_used,
    write_definition,
)
from studies.errors import UnknownComponent
from studies.pruners import PRUNERS, make_pruner
from studies.samplers import SAMPLERS, make_sampler
from studies.storage import (
    DEFAULT_STORAGE_URL,
    StorageError,
    mask_url,
    open_storage,
    resolve_storage_url,
)
from studies.summary import (
    BestTrial,
    RunningTrial,
    StudyListing,
    StudySummary,
    list_studies,
    render_summary,
    summarise,
)

__all__ = [
    "DEFAULT_STORAGE_URL",
    "PRUNERS",
    "SAMPLERS",
    "USER_ATTR_KEY",
    "BestTrial",
    "NotAnEcgsearchStudy",
    "RunningTrial",
    "StorageError",
    "StudyDefinition",
    "StudyListing",
    "StudyMismatch",
    "StudyNotFound",
    "StudySummary",
    "UnknownComponent",
    "check_compatible",
    "count_trials",
    "create_or_load_study",
    "list_studies",
    "load_study_with_definition",
    "make_pruner",
    "make_sampler",
    "mask_url",
    "open_storage",
    "read_definition",
    "render_summary",
    "resolve_storage_url",
    "summarise",
    "trials_remaining",
    "trials_used",
    "write_definition",
]
