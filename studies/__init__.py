"""Study lifecycle: storage URLs, create/load/resume, sampler and pruner factories, summaries.

Imports optuna and sqlalchemy only.
"""

from studies.definition import (
    USER_ATTR_KEY,
    NotAnEcgsearchStudy,
    StudyDefinition,
    StudyMismatch,
    StudyNotFound,
    check_compatible,
    create_or_load_study,
    load_study_with_definition,
    read_definition,
    read_folds,
    write_definition,
    write_folds,
)
from studies.errors import UnknownComponent
from studies.liveness import LIVENESS_KEY, LivenessBeat, StaleTrialReaper, has_storage_heartbeat
from studies.masking import mask_secrets
from studies.pruners import PRUNERS, make_pruner
from studies.samplers import SAMPLERS, make_sampler
from studies.storage import (
    DEFAULT_STORAGE_URL,
    StorageError,
    is_proxy_url,
    open_existing_storage,
    open_storage,
)
from studies.summary import (
    BestTrial,
    RunningTrial,
    StudyListing,
    StudySummary,
    list_studies,
    summarise,
)
from studies.trials import (
    BUDGET_STATES,
    FINISHED_STATES,
    NoCompletedTrial,
    TrialNotUsable,
    best_trial,
    budget_of,
    count_trials,
    describe_counts,
    select_trial,
    trial_config,
    trial_family,
    trials_remaining,
    trials_used,
)

__all__ = [
    "BUDGET_STATES",
    "DEFAULT_STORAGE_URL",
    "FINISHED_STATES",
    "LIVENESS_KEY",
    "PRUNERS",
    "SAMPLERS",
    "USER_ATTR_KEY",
    "BestTrial",
    "LivenessBeat",
    "NoCompletedTrial",
    "NotAnEcgsearchStudy",
    "RunningTrial",
    "StaleTrialReaper",
    "StorageError",
    "StudyDefinition",
    "StudyListing",
    "StudyMismatch",
    "StudyNotFound",
    "StudySummary",
    "TrialNotUsable",
    "UnknownComponent",
    "best_trial",
    "budget_of",
    "check_compatible",
    "count_trials",
    "create_or_load_study",
    "describe_counts",
    "has_storage_heartbeat",
    "is_proxy_url",
    "list_studies",
    "load_study_with_definition",
    "make_pruner",
    "make_sampler",
    "mask_secrets",
    "open_existing_storage",
    "open_storage",
    "read_definition",
    "read_folds",
    "select_trial",
    "summarise",
    "trial_config",
    "trial_family",
    "trials_remaining",
    "trials_used",
    "write_definition",
    "write_folds",
]
