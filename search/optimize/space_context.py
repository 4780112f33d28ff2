"""The SpaceContext of a study: what its spaces may offer, fixed by the definition for the study's whole life."""

from __future__ import annotations

import spaces
from studies import StudyDefinition


def space_context(definition: StudyDefinition) -> spaces.SpaceContext:
    """Leads, window length, sampling rate and patient ids as the study recorded them when it was created."""
    return spaces.SpaceContext(
        n_channels=definition.n_channels,
        seq_len=definition.seq_len,
        fs=definition.fs,
        patient_ids=definition.patient_ids,
    )
