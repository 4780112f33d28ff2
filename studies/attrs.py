"""Several user attributes of a running trial in one database transaction.

Optuna writes each `Trial.set_user_attr` in its own transaction (a commit, so an fsync on PostgreSQL).
A worker writes 5–6 attributes when a trial starts and 3 after every epoch; on an RDBStorage they go in
one transaction here, through the same per-attribute upsert Optuna uses (`_set_trial_attr_without_commit`,
pinned by the optuna<5.1 requirement). Any other storage (the gRPC proxy) gets them one by one.
"""

from __future__ import annotations

from typing import Any

import optuna


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """`trial.set_user_attr(key, value)` for every item, in one transaction where the storage allows it."""
    database = _rdb_beneath(trial.study._storage)
    if database is None or len(attrs) < 2:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(database.scoped_session, True) as session:
        for key, value in attrs.items():
            database._set_trial_attr_without_commit(
                session, models.TrialUserAttributeModel, trial._trial_id, key, value
            )
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what Trial.set_user_attr keeps, so reads see them


def _rdb_beneath(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
    """The RDBStorage itself, or the one beneath Optuna's cache; None for any other storage."""
    storage = getattr(storage, "_backend", storage)
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None
