"""The few Optuna internals regtune reaches, each behind one function that says why.

Optuna's public API has no accessor for these; every other module goes through here, so an
Optuna release that renames one breaks one place (and its tests say so).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a trial (``number`` counts within a study; heartbeats, stale
    checks and direct storage writes key on this id)."""
    return int(trial._trial_id)


def storage_of(study: optuna.Study) -> BaseStorage:
    """A study's storage: a trial found dead or interrupted is failed and re-read through it,
    outside the ask-and-tell of the process that owned it."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The storage's id of a study (the service's aggregate queries filter trials by it)."""
    return int(study._study_id)


def write_attrs(storage: BaseStorage, trial: int, attrs: dict[str, Any]) -> None:
    """Set user attributes of trial ``trial`` (a storage id) directly in the storage."""
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial, key, value)
