"""Study lifecycle: submit, read status, list trials, cancel, delete.

A service study is one row in ``studies`` plus one Optuna study (named ``regtune-<id>``) whose
trials the workers write. Routers call these functions; they hold no HTTP types.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any, cast

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial
from sqlalchemy import delete as sa_delete
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from service.store import scheduling, trials, uploads, warmstart
from service.store.db import Database
from service.store.errors import Conflict, NotFound
from service.store.tables import ACTIVE, FINAL, ArtifactRecord, StudyRecord, StudyStatus, utcnow
from trainer import (
    CVProtocol,
    Dataset,
    Limits,
    Metric,
    SpecError,
    StudySpec,
    front_and_pick,
    metric_direction,
    network_sizes,
    objective_names,
    optuna_internals,
    stored_spec,
    stored_trade_off,
    study_directions,
)


class ModelTooLarge(SpecError):
    """The network would have more parameters than ``Limits.max_parameters`` (HTTP 422)."""


class TooManyActiveStudies(RuntimeError):
    """The tenant has ``max_active_studies`` queued or running already (HTTP 429)."""


def check_parameters(spec: StudySpec, dataset: Dataset, limits: Limits) -> None:
    """Check every network the search may build against the data (a layer that does not fit
    names itself) and refuse one over ``limits.max_parameters``: its size is known only with
    the data. Every width the search may pick (``search_space.hidden``) is counted."""
    for field, widths, count in network_sizes(spec, dataset):
        if count > limits.max_parameters:
            what = f"hidden {widths}" if widths is not None else f"model.kind {spec.model.kind!r}"
            raise ModelTooLarge(
                f"the network ({what}) has {count:,} parameters on dataset {dataset.name!r} "
                f"({dataset.n_features} features, {dataset.n_outputs} outputs); the limit "
                f"max_parameters is {limits.max_parameters:,}",
                field,
            )


def active_studies(session: Session, tenant: str) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(StudyRecord)
            .where(StudyRecord.tenant == tenant, StudyRecord.status.in_(ACTIVE))
        )
        or 0
    )


def check_active(session: Session, tenant: str, max_active: int | None) -> None:
    if max_active is None:
        return
    count = active_studies(session, tenant)
    if count >= max_active:
        raise TooManyActiveStudies(
            f"tenant {tenant!r} has {count} queued or running studies; the limit "
            f"max_active_studies is {max_active}: wait for one to finish or cancel one"
        )


def lock_tenant(session: Session, tenant: str) -> None:
    """Make concurrent submissions of one tenant take turns (count, then insert).

    SQLite's write transactions are serialized already (``BEGIN IMMEDIATE``); on PostgreSQL
    a transaction-scoped advisory lock keyed by the tenant does it.
    """
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"regtune-submit:{tenant}".encode()).digest()[:8])
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key - 2**63})


OPTUNA_NAME_CHARS = 100 - 33  # the column's width less "-" and the 32-character id


def optuna_name(study_id: str, name: str | None) -> str:
    """The Optuna study's name, as the dashboard lists it: the spec's name made unique with
    the study id (the column holds 100 characters), or ``regtune-<id>`` for an unnamed spec."""
    return f"{name[:OPTUNA_NAME_CHARS]}-{study_id}" if name else f"regtune-{study_id}"


def submit(
    db: Database,
    storage: RDBStorage,
    tenant: str,
    spec: StudySpec,
    *,
    limits: Limits | None = None,
    max_active: int | None = None,
) -> StudyRecord:
    """Check the spec against its dataset, then create the Optuna study and the record.

    Everything that can be wrong with the request is found here (``DatasetError``,
    ``SpecError``, ``TooManyActiveStudies``), before anything is written; if writing the
    record fails, the Optuna study is removed again so nothing is left half-written.
    """
    with db.read() as session:
        check_active(session, tenant, max_active)  # cheap, before the dataset is loaded
        dataset = uploads.resolve(session, tenant, spec.dataset)
        warm = warmstart.plan(session, storage, tenant, spec)  # WarmStartError
    protocol = CVProtocol.of(spec, dataset, check_network=False)  # check_parameters does it
    check_parameters(spec, dataset, limits or Limits())
    study_id = uuid.uuid4().hex
    name = optuna_name(study_id, spec.name)
    trade_off = spec.objective.trade_off
    study = optuna.create_study(
        storage=storage, study_name=name, directions=study_directions(protocol.metric, trade_off)
    )
    study.set_user_attr("regtune_id", study_id)
    # The dashboard's axes: "accuracy" (and "parameters"), not "Objective 0".
    study.set_metric_names(objective_names(protocol.metric, trade_off))
    try:
        queued = 0
        if warm is not None:  # the earlier study's best trials come first
            queued = len(warmstart.enqueue(study, spec.search_space, warm)["enqueued"])
        with db.write() as session:
            lock_tenant(session, tenant)
            check_active(session, tenant, max_active)  # again, in the inserting transaction
            record = StudyRecord(
                id=study_id,
                tenant=tenant,
                name=spec.name or name,
                spec=spec.model_dump(mode="json"),
                status="queued",
                optuna_name=name,
                optuna_id=optuna_internals.study_id(study),
                metric=protocol.metric,
                direction=metric_direction(protocol.metric),
                n_trials=spec.n_trials,
                reserved=queued,  # the warm start's trials are the budget's first
                priority=spec.priority,
            )
            session.add(record)
    except Exception:
        optuna.delete_study(study_name=name, storage=storage)
        raise
    return record


def get(session: Session, tenant: str, study_id: str) -> StudyRecord:
    record = session.scalar(
        select(StudyRecord).where(StudyRecord.id == study_id, StudyRecord.tenant == tenant)
    )
    if record is None:
        raise NotFound(f"study {study_id!r} not found")
    return record


def list_for(session: Session, tenant: str, offset: int, limit: int) -> list[StudyRecord]:
    return list(
        session.scalars(
            select(StudyRecord)
            .where(StudyRecord.tenant == tenant)
            .order_by(StudyRecord.created_at.desc())
            .offset(offset)
            .limit(limit)
        )
    )


@dataclass
class StudyProgress:
    """A study as ``GET /v1/studies/{id}`` shows it: trial counts, progress, ETA, best, and
    its share of the workers (its place in its tenant's queue; the workers serving it); a
    trade-off study's Pareto front, and the trial its ``final_model.pick`` chooses from it."""

    record: StudyRecord
    counts: trials.TrialCounts
    progress: float
    eta_s: float | None
    best: FrozenTrial | None
    queue_position: int | None
    workers: int
    pareto: list[FrozenTrial] | None = None
    chosen: FrozenTrial | None = None  # the pick, where it is not the best


def status(
    session: Session, storage: RDBStorage, record: StudyRecord, alive_s: float
) -> StudyProgress:
    """Counts, progress, ETA and the best trial from aggregate queries (fast at 10k trials);
    a worker counts as serving the study while its row beat within ``alive_s`` seconds.

    The ETA is the remaining trials at the rate the study has had so far, so it reflects the
    share of the workers it got; a queued study has no ETA until its first trial ends."""
    study_id = record.optuna_id
    assert study_id is not None
    counts = trials.count_trials(session, study_id)
    done, first, last = trials.throughput(session, study_id)
    best_id = trials.best_trial_id(session, study_id, record.direction)
    best = storage.get_trial(best_id) if best_id is not None else None
    finished = min(counts.finished, record.n_trials)
    pareto, chosen = trade_off_of(session, record, best)
    return StudyProgress(
        record=record,
        counts=counts,
        progress=finished / record.n_trials,
        eta_s=None
        if record.status not in ACTIVE
        else trials.eta_seconds(counts, record.n_trials, done, first, last),
        best=best,
        queue_position=scheduling.queue_position(session, record),
        workers=scheduling.serving_workers(session, record.id, alive_s),
        pareto=pareto,
        chosen=chosen,
    )


def trade_off_of(
    session: Session, record: StudyRecord, best: FrozenTrial | None
) -> tuple[list[FrozenTrial] | None, FrozenTrial | None]:
    """A trade-off study's Pareto front (its values read in one query) and the trial that
    ``final_model.pick`` chooses from it where that is not ``best``; (None, None) for a
    single-objective study."""
    if stored_trade_off(record.spec) is None:
        return None, None
    optuna_id = record.optuna_id
    assert optuna_id is not None
    front, chosen = front_and_pick(
        stored_spec(record.spec),
        cast("Metric", record.metric),  # the protocol's, written at submission
        lambda directions: trials.pareto_trials(session, optuna_id, directions),
        best,
    )
    return front, None if chosen is None or best is None or chosen.number == best.number else chosen


def trial_page(
    session: Session, record: StudyRecord, offset: int, limit: int
) -> tuple[int, list[tuple[FrozenTrial, str]]]:
    """How many trials the study holds, and a page of them, each with its listed state."""
    assert record.optuna_id is not None
    total = trials.count_trials(session, record.optuna_id).total
    retried = trials.retried_numbers(session, record.optuna_id)
    ids = trials.trial_ids_page(session, record.optuna_id, offset, limit)
    page = trials.trial_summaries(session, ids)
    return total, [(t, trials.listed_state(t, retried)) for t in page]


def trial(
    session: Session, storage: RDBStorage, record: StudyRecord, number: int
) -> tuple[FrozenTrial, str]:
    """One trial, whole, with its listed state."""
    assert record.optuna_id is not None
    trial_id = trials.trial_id_of(session, record.optuna_id, number)
    if trial_id is None:
        raise NotFound(f"study {record.id!r} has no trial {number}")
    found = storage.get_trial(trial_id)
    return found, trials.listed_state(found, trials.retried_numbers(session, record.optuna_id))


def all_trials(storage: RDBStorage, record: StudyRecord) -> list[FrozenTrial]:
    """Every trial of the study with its attributes (the report reads them all)."""
    assert record.optuna_id is not None
    return storage.get_all_trials(record.optuna_id, deepcopy=False)


def cancel(db: Database, tenant: str, study_id: str) -> StudyRecord:
    """Queued or running → cancelled; workers notice between epochs and stop."""
    with db.write() as session:
        record = get(session, tenant, study_id)
        if not move(session, study_id, "cancelled"):
            raise Conflict(
                f"study {study_id!r} is already {record.status}; only queued or "
                "running studies can be cancelled"
            )
    return record


def delete(db: Database, storage: RDBStorage, tenant: str, study_id: str) -> None:
    """Remove the record and its Optuna study. A queued or running study is cancelled first
    (committed on its own), so that its workers stop its trials as for a cancel."""
    with db.write() as session:
        get(session, tenant, study_id)  # 404 if it is not the tenant's
        move(session, study_id, "cancelled")
    with db.write() as session:
        record = get(session, tenant, study_id)
        name = record.optuna_name
        # Its files (the final model) go with it; the foreign key cascades as well.
        session.execute(sa_delete(ArtifactRecord).where(ArtifactRecord.study_id == study_id))
        session.delete(record)
    with contextlib.suppress(KeyError):  # already gone
        optuna.delete_study(study_name=name, storage=storage)


def move(
    session: Session,
    study_id: str,
    to: StudyStatus,
    *,
    when: tuple[StudyStatus, ...] = ACTIVE,
    **fields: Any,
) -> bool:
    """The one way a study's state changes: to ``to`` if it is still in one of ``when``, with
    its timestamp (and ``fields``), in the caller's transaction; whether it moved.

    A conditional ``UPDATE … WHERE status IN when``, atomic on SQLite and PostgreSQL: of two
    racing moves (a worker completing a study its user cancels) exactly one wins.
    """
    values: dict[str, Any] = {"status": to, **fields}
    if to in FINAL:
        values.setdefault("finished_at", utcnow())
    if to == "running":
        values.setdefault("started_at", utcnow())
    result = session.execute(
        update(StudyRecord)
        .where(StudyRecord.id == study_id, StudyRecord.status.in_(when))
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def reserved(session: Session, study_id: str) -> int:
    """How much of a study's budget is taken (0 for a study deleted meanwhile)."""
    return session.scalar(select(StudyRecord.reserved).where(StudyRecord.id == study_id)) or 0


def reserve_trial(session: Session, study_id: str) -> bool:
    """Take one trial of a running study's budget, in the caller's transaction; whether it
    was left (:mod:`trainer.tuning.budget`).

    A conditional ``UPDATE … SET reserved = reserved + 1 WHERE reserved < n_trials``: the
    row's write lock makes racing workers take turns, on SQLite and PostgreSQL, so of two that
    race for the last trial exactly one gets it.
    """
    result = session.execute(
        update(StudyRecord)
        .where(
            StudyRecord.id == study_id,
            StudyRecord.status == "running",
            StudyRecord.reserved < StudyRecord.n_trials,
        )
        .values(reserved=StudyRecord.reserved + 1)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark(
    db: Database,
    study_id: str,
    to: StudyStatus,
    *,
    when: tuple[StudyStatus, ...] = ACTIVE,
    **fields: Any,
) -> bool:
    """:func:`move` in a transaction of its own."""
    with db.write() as session:
        return move(session, study_id, to, when=when, **fields)


def state_of(
    session: Session, *, study_id: str | None = None, optuna_name: str | None = None
) -> StudyStatus | None:
    """A study's state now, by its id or its Optuna study's name (None: it was deleted)."""
    key = (
        StudyRecord.id == study_id
        if study_id is not None
        else StudyRecord.optuna_name == optuna_name
    )
    return session.scalar(select(StudyRecord.status).where(key))
