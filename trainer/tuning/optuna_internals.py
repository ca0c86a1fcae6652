"""The few Optuna internals regtune reaches, each behind one function that says why.

Optuna's public API has no accessor for these; every other module goes through here, so an
Optuna release that renames one breaks one place (and its tests say so).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages._rdb import models as rdb_models
from sqlalchemy import Table

# Optuna's RDB trial tables, as Optuna itself declares them (and migrates them). The service's
# status and listing queries read them directly: the storage API has no GROUP BY, and loading
# every trial of a 10,000-trial study to count it is what those queries exist to avoid.
TRIALS: Table = rdb_models.TrialModel.__table__
TRIAL_VALUES: Table = rdb_models.TrialValueModel.__table__
TRIAL_PARAMS: Table = rdb_models.TrialParamModel.__table__
TRIAL_USER_ATTRIBUTES: Table = rdb_models.TrialUserAttributeModel.__table__
TRIAL_SYSTEM_ATTRIBUTES: Table = rdb_models.TrialSystemAttributeModel.__table__
TRIAL_HEARTBEATS: Table = rdb_models.TrialHeartbeatModel.__table__
# How Optuna tags a value it stores as NULL (±inf).
STORED_INFINITY = {
    rdb_models.TrialValueModel.TrialValueType.INF_POS: float("inf"),
    rdb_models.TrialValueModel.TrialValueType.INF_NEG: float("-inf"),
}


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


def take_queued(study: optuna.Study) -> optuna.Trial | None:
    """The next queued trial (a re-run or a warm start), now RUNNING; None if none is queued.

    ``study.ask()`` pops the queue, and creates a fresh trial when it is empty: the budget
    must reserve before that creation and must not when a queued trial is taken, so the two
    halves of ``ask`` are called apart (Optuna's pop is atomic: of two processes racing for one
    queued trial, one gets it).
    """
    study._thread_local.cached_all_trials = None  # what ask() does: see other processes' trials
    queued = study._pop_waiting_trial_id()
    return None if queued is None else optuna.Trial(study, queued)


def create_trial(study: optuna.Study) -> optuna.Trial:
    """A fresh RUNNING trial, never one from the queue: the other half of ``study.ask()``,
    called only once the budget has reserved it (:func:`take_queued`)."""
    study._thread_local.cached_all_trials = None
    return optuna.Trial(study, study._storage.create_new_trial(study._study_id))
