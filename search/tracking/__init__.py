"""The MLflow mirror of a study: one experiment per study, one parent run, one child run per trial.

The worker feeds `TrialMirror` live; `sync_study` rebuilds or completes the mirror from the Optuna
database alone. MLflow mirrors and never decides: if it is down, trials go on and the mirror catches up.
"""

from typing import Any

from search.tracking.mirror import TrialMirror
from search.tracking.runs import setup_study_mirror
from search.tracking.sync import sync_study
from search.tracking.uri import resolve_tracking_uri

__all__ = [
    "TrialMirror",
    "definition_tags",
    "resolve_tracking_uri",
    "setup_study_mirror",
    "study_tags",
    "sync_study",
]


def study_tags(
    *, study_name: str, space: str, storage_url: str, sampler: str, pruner: str, objective: str, direction: str
) -> dict[str, str]:
    """The parent run's tags, named as `search.tracking.names` spells them (the storage password masked)."""
    from search.tracking import names
    from studies import mask_secrets

    return {
        names.TAG_STUDY: study_name,
        names.TAG_SPACE: space,
        names.TAG_STORAGE: mask_secrets(storage_url),
        names.TAG_SAMPLER: sampler,
        names.TAG_PRUNER: pruner,
        names.TAG_OBJECTIVE: objective,
        names.TAG_DIRECTION: direction,
    }


def definition_tags(*, study_name: str, definition: Any, storage_url: str) -> dict[str, str]:
    """`study_tags` for a `studies.StudyDefinition`: what `start` and `mlflow-sync` put on the parent run."""
    return study_tags(
        study_name=study_name,
        space=definition.space,
        storage_url=storage_url,
        sampler=definition.sampler,
        pruner=definition.pruner,
        objective=definition.objective,
        direction=definition.direction,
    )
