"""The MLflow side of a study: one experiment per study, one parent run, one child run per trained trial.

It is a projection of the study database, built by one function per trial (`projection.trial_run`): the
worker's `TrialMirror` writes it live, in the background; `sync_study` (`ecgsearch mlflow-sync`) writes it
for every trial and completes whatever the live mirror missed. MLflow mirrors and never decides.
"""

from typing import Any

from search.tracking.client import TrackingStoreError, silence_run_links
from search.tracking.mirror import TrialMirror
from search.tracking.runs import setup_study_mirror
from search.tracking.sync import sync_study
from search.tracking.uri import resolve_tracking_uri, same_store

__all__ = [
    "TrackingStoreError",
    "TrialMirror",
    "definition_tags",
    "resolve_tracking_uri",
    "same_store",
    "setup_study_mirror",
    "study_tags",
    "sync_study",
]

# Whatever in this process talks to MLflow (the mirror, `mlflow-sync`, the retrained model's logging),
# MLflow must not print its run links: they carry the tracking URI's password.
silence_run_links()


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
    from search.tracking import names

    tags = study_tags(
        study_name=study_name,
        space=definition.space,
        storage_url=storage_url,
        sampler=definition.sampler,
        pruner=definition.pruner,
        objective=definition.objective,
        direction=definition.direction,
    )
    if definition.is_multi_objective:
        tags[names.TAG_OBJECTIVES] = ",".join(definition.metric_names())
    return tags
