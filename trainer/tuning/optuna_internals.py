"""The few Optuna internals regtune reaches, each behind one function that says why.

Optuna's public API has no accessor for these; every other module goes through here, so an
Optuna release that renames one breaks one place (and its tests say so).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection, _multi_objective

if TYPE_CHECKING:
    from sqlalchemy import Table

    # Optuna's RDB trial tables, as Optuna itself declares them (and migrates them). The
    # service's status and listing queries read them directly: the storage API has no GROUP
    # BY, and loading every trial of a 10,000-trial study to count it is what those queries
    # exist to avoid.
    TRIALS: Table
    TRIAL_VALUES: Table
    TRIAL_PARAMS: Table
    TRIAL_USER_ATTRIBUTES: Table
    TRIAL_SYSTEM_ATTRIBUTES: Table
    TRIAL_HEARTBEATS: Table
    # How Optuna tags a value it stores as NULL (±inf).
    STORED_INFINITY: dict[Any, float]

_RDB_TABLES = {
    "TRIALS": "TrialModel",
    "TRIAL_VALUES": "TrialValueModel",
    "TRIAL_PARAMS": "TrialParamModel",
    "TRIAL_USER_ATTRIBUTES": "TrialUserAttributeModel",
    "TRIAL_SYSTEM_ATTRIBUTES": "TrialSystemAttributeModel",
    "TRIAL_HEARTBEATS": "TrialHeartbeatModel",
}


def __getattr__(name: str) -> Any:
    """The RDB names above, on first use: Optuna's models import SQLAlchemy (0.3 s of a
    ``regtune tune`` start, which on its journal file never reads a table)."""
    if name not in _RDB_TABLES and name != "STORED_INFINITY":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from optuna.storages._rdb import models

    if name in _RDB_TABLES:
        value: Any = getattr(models, _RDB_TABLES[name]).__table__
    else:
        kind = models.TrialValueModel.TrialValueType
        value = {kind.INF_POS: float("inf"), kind.INF_NEG: float("-inf")}
    globals()[name] = value
    return value


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


def report_intermediate(trial: optuna.Trial, step: int, value: float) -> None:
    """Store ``value`` as ``trial``'s intermediate value at ``step``: what ``Trial.report``
    does, which Optuna refuses in a multi-objective study (NotImplementedError) although its
    storages keep intermediate values whatever the directions. A trade-off study stores its
    metric's learning curve this way, for its pruner (:func:`prune_on_metric`) and the
    dashboard. A step stored again (a trial restarted after an out-of-memory) is overwritten."""
    storage_of(trial.study).set_trial_intermediate_value(trial_id(trial), step, value)


class _MetricStorage:
    """A study's storage as a single-objective study of its first objective reads it: every
    call goes to ``storage``, but the study's directions are that objective's alone."""

    def __init__(self, storage: BaseStorage, direction: StudyDirection) -> None:
        self._storage, self._direction = storage, direction

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return [self._direction]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def prune_on_metric(trial: optuna.Trial) -> bool:
    """Whether ``trial``'s pruner prunes it by its intermediate values (the metric's, stored
    by :func:`report_intermediate`): what ``Trial.should_prune`` asks, which Optuna refuses in
    a multi-objective study.

    The pruner is shown the study as a single-objective one in the first objective's
    direction: Optuna's median, percentile and successive-halving pruners read
    ``study.direction``, ``study.get_trials`` and the trials' ``intermediate_values`` (and
    ``_trial_id``, ``system_attrs``), and hyperband builds its bracket studies from
    ``study._storage``, which answers that one direction too. The trial is read back whole from
    the storage (``Trial.should_prune`` reads Optuna's private cache of it).
    """
    study = trial.study
    storage = storage_of(study)
    view = _MetricDirected(study)  # the same study, no storage query to make it
    view._storage = cast(BaseStorage, _MetricStorage(storage, study.directions[0]))
    return study.pruner.prune(view, storage.get_trial(trial_id(trial)))


def on_pareto_front(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Which rows of ``values`` ``[n, objectives]`` (completed trials' values) no other row
    dominates in ``directions`` ("maximize" or "minimize" per objective): Optuna's own rule,
    the one ``Study.best_trials`` applies (a sort and a sweep in two dimensions), on plain
    numbers, so that a front is found without a FrozenTrial per trial (the service reads a
    large study's values in one query)."""
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    loss = np.where(np.isnan(values), np.inf, values * sign)  # Optuna's: a missing value loses
    return _multi_objective._is_pareto_front(loss, assume_unique_lexsorted=False)


class _MetricDirected(optuna.Study):
    """A multi-objective study whose ``direction`` is its first objective's: the same study
    (storage, id, directions, trial cache), answering the one question Optuna's TPE asks of
    a single-objective study only."""

    def __init__(self, study: optuna.Study) -> None:  # no Study.__init__: nothing is re-read
        self.__dict__.update(study.__dict__)

    @property
    def direction(self) -> StudyDirection:
        return self.directions[0]


def metric_directed(study: optuna.Study) -> optuna.Study:
    """``study`` as Optuna's TPE sampler must see a trade-off study.

    TPE ranks pruned trials by their last intermediate value in ``study.direction``, which a
    multi-objective study refuses (RuntimeError); in Optuna's own multi-objective studies no
    trial has intermediate values, so the question never comes. A trade-off study stores its
    metric's curve (:func:`report_intermediate`), so its pruned trials are ranked by the
    metric, in the metric's direction: the study's first.
    """
    return _MetricDirected(study)
