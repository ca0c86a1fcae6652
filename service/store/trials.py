"""Optuna's side of the database: its storage, and aggregate queries over its trial tables.

The status endpoint must stay fast for studies with 10,000 trials, so it never loads every
trial: counts, the best value and throughput come from ``GROUP BY``/``ORDER BY … LIMIT 1``
queries on Optuna's own tables (``optuna_internals``: Optuna declares and migrates them).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import warnings
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import optuna
from optuna.distributions import json_to_distribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import (
    Table,
    func,
    select,
)
from sqlalchemy.orm import Session

from service.settings import Settings
from service.store.db import DATABASE_ERRORS, engine_kwargs
from trainer import LISTED, TrialRecord, best_first, front_rows, optuna_internals

log = logging.getLogger("regtune.trials")

# A trial whose worker died is re-queued with the same parameters at most this often.
MAX_RETRIES = 3
# fail_reason of a trial stopped by its study's cancel, and of one whose worker went silent.
CANCELLED = "cancelled with its study"
STALE = "its worker stopped beating (killed, or cut off from the database)"

trials = optuna_internals.TRIALS
trial_values = optuna_internals.TRIAL_VALUES
trial_params = optuna_internals.TRIAL_PARAMS
trial_user_attributes = optuna_internals.TRIAL_USER_ATTRIBUTES
trial_system_attributes = optuna_internals.TRIAL_SYSTEM_ATTRIBUTES
trial_heartbeats = optuna_internals.TRIAL_HEARTBEATS


def mark_stale(storage: RDBStorage, trial_id: int) -> None:
    """Record why a stale trial fails (before it is failed: the reason comes with the state)."""
    with contextlib.suppress(UpdateFinishedTrialError):  # another worker failed it first
        optuna_internals.write_attrs(storage, trial_id, TrialRecord(fail_reason=STALE).to_attrs())


class HeartbeatStorage(RDBStorage):
    """Optuna's RDB storage whose heartbeats outlive a database outage.

    Optuna's heartbeat thread ends at the first error it meets, so after a brief outage a
    trial that trains on would never beat again, be declared stale and run twice. A missed
    beat is only a late one: log it and keep beating.
    """

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except DATABASE_ERRORS as exc:
            log.warning("heartbeat of trial %d missed: %s", trial_id, str(exc).splitlines()[0])

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # Optuna's own stale check (``study.optimize`` runs it before each trial) fails these
        # right after asking: give them the reason first, as ``recover_stale`` does, so a
        # trial failed by either path says why. (A private Optuna method: the one seam.)
        stale = super()._get_stale_trial_ids(study_id)
        for trial_id in stale:
            mark_stale(self, trial_id)
        return stale


def make_storage(settings: Settings) -> RDBStorage:
    """Optuna's storage on the service's database, with heartbeats for crash safety."""
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return HeartbeatStorage(
            settings.database_url,
            engine_kwargs=engine_kwargs(settings),
            heartbeat_interval=settings.heartbeat_s,
            grace_period=settings.grace_s,
            heartbeat_stale_trial_callback=retry_callback(),
        )


class CleanRetry(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry, whose queued copy starts clean: it does not inherit the failure's
    reason from the attempt it repeats (a completed re-run is not "interrupted")."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        clean = copy.deepcopy(trial)
        clean.user_attrs = TrialRecord.of(trial).without_failure().to_attrs()
        super().__call__(study, clean)


def retry_callback() -> RetryHeartbeatStaleTrialCallback:
    """Re-queue a failed trial's parameters (at most ``MAX_RETRIES`` times per trial)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return CleanRetry(max_retry=MAX_RETRIES)


# Optuna's RetryFailedTrialCallback keeps on each re-run the numbers of the attempts it repeats.
RETRY_HISTORY = "retry_history"


def listed_state(trial: FrozenTrial, retried: Collection[int]) -> str:
    """A trial's state as users see it (the trial list, the counts, the report): Optuna's,
    except that a failed trial whose parameters were queued again (its worker died or stopped)
    is ``retried``, and one stopped by its study's cancel is ``cancelled``."""
    if trial.state == TrialState.FAIL:
        if trial.number in retried:
            return "retried"
        if TrialRecord.of(trial).fail_reason == CANCELLED:
            return "cancelled"
    return trial.state.name.lower()


def retried_of(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of the trials whose parameters were queued again, from their re-runs."""
    return {int(n) for t in trials for n in t.system_attrs.get(RETRY_HISTORY, ())}


def retried_numbers(session: Session, study_id: int) -> set[int]:
    """:func:`retried_of` in one query, for a study too large to load."""
    joined = trial_system_attributes.join(
        trials, trials.c.trial_id == trial_system_attributes.c.trial_id
    )
    histories = session.scalars(
        select(trial_system_attributes.c.value_json)
        .select_from(joined)
        .where(trials.c.study_id == study_id, trial_system_attributes.c.key == RETRY_HISTORY)
    )
    return {int(n) for history in histories for n in json.loads(history)}


@dataclass(frozen=True)
class TrialCounts:
    """Trials of one study by :func:`listed_state`; ``retried`` failures were re-queued and
    cost no budget (their re-runs count instead)."""

    complete: int = 0
    pruned: int = 0
    fail: int = 0  # failed for a reason of their own: neither re-queued nor cancelled
    running: int = 0
    waiting: int = 0
    retried: int = 0  # failed, then queued again (their re-run counts instead)
    cancelled: int = 0  # stopped because their study was cancelled

    @classmethod
    def of(cls, trials: Sequence[FrozenTrial]) -> TrialCounts:
        """The counts of loaded trials (the report's); :func:`count_trials` is the same rule
        in SQL, for the status of a study of any size."""
        retried = retried_of(trials)
        return cls(**Counter(listed_state(t, retried) for t in trials))

    @property
    def finished(self) -> int:
        """Trials that used up budget: completed, pruned, failed for good or cancelled."""
        return self.complete + self.pruned + self.fail + self.cancelled

    @property
    def total(self) -> int:
        """Every trial the study holds, as its trial list shows them (re-run attempts too)."""
        return self.finished + self.running + self.waiting + self.retried

    def as_dict(self) -> dict[str, int]:
        counts = {
            "complete": self.complete,
            "pruned": self.pruned,
            "fail": self.fail,
            "running": self.running,
            "waiting": self.waiting,
        }
        extra = {"retried": self.retried, "cancelled": self.cancelled}
        return counts | {k: v for k, v in extra.items() if v}


def count_trials(session: Session, study_id: int) -> TrialCounts:
    rows = session.execute(
        select(trials.c.state, func.count())
        .where(trials.c.study_id == study_id)
        .group_by(trials.c.state)
    ).all()
    counts = {state.name.lower(): n for state, n in rows}

    def tagged(table: Table, key: str, value: str | None = None) -> int:
        """Trials of the study that carry the attribute ``key`` (of JSON ``value``)."""
        joined = table.join(trials, trials.c.trial_id == table.c.trial_id)
        query = select(func.count()).select_from(joined)
        query = query.where(trials.c.study_id == study_id, table.c.key == key)
        if value is not None:
            query = query.where(table.c.value_json == value)
        return session.scalar(query) or 0

    retried = tagged(trial_system_attributes, "failed_trial")  # on the re-run: Optuna's mark
    cancelled = tagged(trial_user_attributes, "fail_reason", json.dumps(CANCELLED))
    return TrialCounts(
        complete=counts.get("complete", 0),
        pruned=counts.get("pruned", 0),
        fail=counts.get("fail", 0) - retried - cancelled,
        running=counts.get("running", 0),
        waiting=counts.get("waiting", 0),
        retried=retried,
        cancelled=cancelled,
    )


def stale_trials(session: Session, grace_s: float) -> dict[int, list[int]]:
    """Running trials silent for longer than ``grace_s``, of every study: trial ids by the
    id of their Optuna study (one query, for the workers' periodic sweep).

    Optuna's own ``fail_stale_trials`` skips a trial that has no heartbeat yet, so a worker
    killed in the instant between starting a trial and its first beat would leave that trial
    running for ever; here such a trial goes stale ``grace_s`` after its start.
    """
    now_db = session.scalar(select(func.now()))
    assert now_db is not None
    now_db = now_db.replace(tzinfo=None)  # heartbeats are the database's naive now()
    now_local = datetime.now()  # datetime_start is the worker's naive local time (Optuna's)
    rows = session.execute(
        select(
            trials.c.study_id,
            trials.c.trial_id,
            trials.c.datetime_start,
            trial_heartbeats.c.heartbeat,
        )
        .outerjoin(trial_heartbeats, trial_heartbeats.c.trial_id == trials.c.trial_id)
        .where(trials.c.state == TrialState.RUNNING)
    ).all()
    stale: dict[int, list[int]] = {}
    for study_id, trial_id, started, beat in rows:
        silent = (now_db - beat) if beat is not None else (now_local - started)
        if silent.total_seconds() > grace_s:
            stale.setdefault(study_id, []).append(trial_id)
    return stale


def recover_stale(storage: RDBStorage, study: optuna.Study, trial_ids: Sequence[int]) -> int:
    """Fail the study's stale trials ``trial_ids`` and queue their parameters again; return
    how many this call recovered (of several workers racing, each trial goes to one)."""
    recovered = 0
    for trial_id in trial_ids:
        mark_stale(storage, trial_id)
        # Only the worker whose update wins re-queues it, however many race here.
        try:
            won = storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:  # another worker failed it first
            continue
        if won:
            retry_callback()(study, storage.get_trial(trial_id))
            recovered += 1
    return recovered


def top_trial_ids(session: Session, study_id: int, direction: str, k: int) -> list[int]:
    """The ``k`` best COMPLETE trials of an Optuna study, best first (ties: lower number)."""
    value = trial_values.c.value
    return list(
        session.scalars(
            select(trials.c.trial_id)
            .join(trial_values, trial_values.c.trial_id == trials.c.trial_id)
            .where(
                trials.c.study_id == study_id,
                trials.c.state == TrialState.COMPLETE,
                trial_values.c.objective == 0,
            )
            .order_by(value.asc() if best_first(direction) > 0 else value.desc(), trials.c.number)
            .limit(k)
        )
    )


def best_trial_id(session: Session, study_id: int, direction: str) -> int | None:
    best = top_trial_ids(session, study_id, direction, 1)
    return best[0] if best else None


def completed_values(session: Session, study_id: int) -> tuple[list[int], list[int], np.ndarray]:
    """The study's COMPLETE trials as plain rows, in one query: their ids, numbers and values
    ``[n, objectives]``, what a trade-off's Pareto front is found from, whatever the study's
    size, without a FrozenTrial made per trial."""
    rows = session.execute(
        select(trials.c.trial_id, trials.c.number, trial_values.c.objective, trial_values.c.value)
        .add_columns(trial_values.c.value_type)
        .join(trial_values, trial_values.c.trial_id == trials.c.trial_id)
        .where(trials.c.study_id == study_id, trials.c.state == TrialState.COMPLETE)
        .order_by(trials.c.number, trial_values.c.objective)
    ).all()
    values: dict[tuple[int, int], list[float]] = {}
    for row in rows:
        value = optuna_internals.STORED_INFINITY.get(row.value_type, row.value)
        values.setdefault((row.trial_id, row.number), []).append(value)
    keys = list(values)
    return (
        [trial_id for trial_id, _ in keys],
        [number for _, number in keys],
        np.array(list(values.values()), dtype=float),
    )


def pareto_trials(session: Session, study_id: int, directions: Sequence[str]) -> list[FrozenTrial]:
    """The study's Pareto front (``trainer.front_rows``), best metric first, each trial with
    its values, parameters, fold scores and spread (:func:`trial_summaries`)."""
    ids, numbers, values = completed_values(session, study_id)
    if not ids:
        return []
    front = front_rows(numbers, values, directions)
    return trial_summaries(session, [ids[r] for r in front], ("fold_scores", "cv_std"))


def trial_id_of(session: Session, study_id: int, number: int) -> int | None:
    return session.scalar(
        select(trials.c.trial_id).where(trials.c.study_id == study_id, trials.c.number == number)
    )


def trial_ids_page(session: Session, study_id: int, offset: int, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(trials.c.trial_id)
            .where(trials.c.study_id == study_id)
            .order_by(trials.c.number)
            .offset(offset)
            .limit(limit)
        )
    )


def local_time(utc: datetime | None) -> datetime | None:
    """RDBStorage's naive UTC as the naive local time its FrozenTrials carry."""
    return None if utc is None else utc.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)


def trial_summaries(
    session: Session, trial_ids: list[int], user_attrs: Sequence[str] = LISTED
) -> list[FrozenTrial]:
    """The trials ``trial_ids``, in that order, with what a listing shows: state, values,
    params, times and only the user attributes ``user_attrs`` (no intermediate values, no
    system attributes). Four queries of plain rows whatever the page size.

    ``RDBStorage.get_trial`` loads everything through the ORM, about seven queries a trial,
    and a regtune trial's attributes hold its per-fold learning curves: a page of 50 of the
    load benchmark's trials took 77 ms that way against 3.6 ms here (SQLite), Python that
    holds the GIL beside the API's event loop.
    """
    if not trial_ids:
        return []
    rows = session.execute(
        select(
            trials.c.trial_id,
            trials.c.number,
            trials.c.state,
            trials.c.datetime_start,
            trials.c.datetime_complete,
        ).where(trials.c.trial_id.in_(trial_ids))
    ).all()
    parts: dict[int, dict[str, dict]] = {
        row.trial_id: {"params": {}, "distributions": {}, "values": {}, "user_attrs": {}}
        for row in rows
    }
    params = session.execute(
        select(trial_params)
        .where(trial_params.c.trial_id.in_(trial_ids))
        .order_by(trial_params.c.param_id)
    ).all()
    distributions = {
        text: json_to_distribution(text) for text in {p.distribution_json for p in params}
    }
    for p in params:
        distribution = distributions[p.distribution_json]
        parts[p.trial_id]["params"][p.param_name] = distribution.to_external_repr(p.param_value)
        parts[p.trial_id]["distributions"][p.param_name] = distribution
    for v in session.execute(
        select(trial_values).where(trial_values.c.trial_id.in_(trial_ids))
    ).all():
        parts[v.trial_id]["values"][v.objective] = optuna_internals.STORED_INFINITY.get(
            v.value_type, v.value
        )
    for a in session.execute(
        select(trial_user_attributes).where(
            trial_user_attributes.c.trial_id.in_(trial_ids),
            trial_user_attributes.c.key.in_(list(user_attrs)),
        )
    ).all():
        parts[a.trial_id]["user_attrs"][a.key] = json.loads(a.value_json)
    built = {
        row.trial_id: FrozenTrial(
            number=row.number,
            state=row.state,
            value=None,
            values=[v for _, v in sorted(parts[row.trial_id]["values"].items())] or None,
            datetime_start=local_time(row.datetime_start),
            datetime_complete=local_time(row.datetime_complete),
            params=parts[row.trial_id]["params"],
            distributions=parts[row.trial_id]["distributions"],
            user_attrs=parts[row.trial_id]["user_attrs"],
            system_attrs={},
            intermediate_values={},
            trial_id=row.trial_id,
        )
        for row in rows
    }
    return [built[i] for i in trial_ids if i in built]


def throughput(session: Session, study_id: int) -> tuple[int, datetime | None, datetime | None]:
    """(finished trials, first start, last completion): trials per second over the study."""
    row = session.execute(
        select(
            func.count(), func.min(trials.c.datetime_start), func.max(trials.c.datetime_complete)
        ).where(trials.c.study_id == study_id, trials.c.datetime_complete.is_not(None))
    ).one()
    return int(row[0]), row[1], row[2]


def eta_seconds(
    counts: TrialCounts, n_trials: int, done: int, first: datetime | None, last: datetime | None
) -> float | None:
    """Remaining trials over the observed rate (which already reflects parallel workers)."""
    left = max(n_trials - counts.finished, 0)
    if left == 0:
        return 0.0
    if done == 0 or first is None or last is None:
        return None
    elapsed = (last - first).total_seconds()
    return left * elapsed / done if elapsed > 0 else None
