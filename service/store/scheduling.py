"""Which study a free worker slot serves: fair between tenants, then between a tenant's studies.

When a slot frees (a trial ends, a worker starts), the next trial goes to the active study
with work left that is first by

    (running trials of its tenant, its tenant's last trial start,
     −priority, running trials of the study, the study's last trial start, created_at)

so the tenant with the fewest running trials is served first, a tenant's own studies by their
``priority`` (higher first) and then by how many trials each already runs. Ties go to the
tenant, then the study, served least recently (one never served first), then to the oldest
study: without that memory a single worker, whose running trials are all gone each time it
looks, would find every tie alike and serve the oldest study for ever. With W workers × P
slots and two tenants each gets about half as soon as running trials end, and a tenant's new
study starts within one trial's time however long another tenant's queue is. Nothing is
pre-empted: the share changes at trial boundaries.

A study has work left while its budget is not all reserved or a re-run waits in its queue.
Every active study's running trials count for its tenant, those of a study whose budget is
spent included. One query reads every active study with its running and queued trials; the
ranking of a few hundred rows is then done here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from optuna.trial import TrialState
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from service.store.tables import ACTIVE, StudyRecord, WorkerRecord, utcnow
from trainer import optuna_internals

trials = optuna_internals.TRIALS
NEVER = datetime.min  # the last start of a study that has not started a trial


@dataclass(frozen=True)
class Candidate:
    """An active study as the scheduler sees it."""

    id: str
    tenant: str
    priority: int
    created_at: datetime
    running: int  # its trials running now
    tenant_running: int  # the running trials of all its tenant's active studies
    last_start: datetime  # when its latest trial started (NEVER: none yet)
    tenant_last_start: datetime  # the same over its tenant's active studies
    has_work: bool  # budget left to reserve, or a re-run queued

    def order(self) -> tuple[int, datetime, int, int, datetime, datetime]:
        """The fair order: first is served first."""
        return (
            self.tenant_running,
            self.tenant_last_start,
            -self.priority,
            self.running,
            self.last_start,
            self.created_at,
        )


def candidates(session: Session) -> list[Candidate]:
    """Every active study with its running trials and its tenant's, in one query."""
    running = func.coalesce(func.sum(case((trials.c.state == TrialState.RUNNING, 1), else_=0)), 0)
    waiting = func.coalesce(func.sum(case((trials.c.state == TrialState.WAITING, 1), else_=0)), 0)
    rows = session.execute(
        select(
            StudyRecord.id,
            StudyRecord.tenant,
            StudyRecord.priority,
            StudyRecord.created_at,
            StudyRecord.reserved,
            StudyRecord.n_trials,
            running.label("running"),
            waiting.label("waiting"),
            func.max(trials.c.datetime_start).label("last_start"),
        )
        .outerjoin(trials, trials.c.study_id == StudyRecord.optuna_id)
        .where(StudyRecord.status.in_(ACTIVE))
        .group_by(StudyRecord.id)
    ).all()
    per_tenant: dict[str, int] = {}
    tenant_last: dict[str, datetime] = {}
    for row in rows:
        per_tenant[row.tenant] = per_tenant.get(row.tenant, 0) + int(row.running)
        tenant_last[row.tenant] = max(tenant_last.get(row.tenant, NEVER), row.last_start or NEVER)
    return [
        Candidate(
            id=row.id,
            tenant=row.tenant,
            priority=row.priority,
            created_at=row.created_at,
            running=int(row.running),
            tenant_running=per_tenant[row.tenant],
            last_start=row.last_start or NEVER,
            tenant_last_start=tenant_last[row.tenant],
            has_work=row.reserved < row.n_trials or int(row.waiting) > 0,
        )
        for row in rows
    ]


def next_study(session: Session) -> Candidate | None:
    """The study the next free slot serves (None: no active study has work left)."""
    ready = [c for c in candidates(session) if c.has_work]
    return min(ready, key=Candidate.order, default=None)


def keeps(session: Session, study_id: str) -> bool:
    """Whether a worker running ``study_id`` should give its next free slot to it again:
    it has work left and no study is strictly first before it (a tie keeps the worker where
    it is: switching costs a drain and a new stack)."""
    found = candidates(session)
    mine = next((c for c in found if c.id == study_id), None)
    if mine is None or not mine.has_work:
        return False
    return not any(c.has_work and c.order() < mine.order() for c in found)


def queue_position(session: Session, record: StudyRecord) -> int | None:
    """A queued study's place in its tenant's queue (1: next), in the order the tenant's
    studies are served (priority, then age); None for a study that is not queued."""
    if record.status != "queued":
        return None
    ahead = session.scalar(
        select(func.count())
        .select_from(StudyRecord)
        .where(
            StudyRecord.tenant == record.tenant,
            StudyRecord.status == "queued",
            (StudyRecord.priority > record.priority)
            | (
                (StudyRecord.priority == record.priority)
                & (StudyRecord.created_at < record.created_at)
            ),
        )
    )
    return int(ahead or 0) + 1


def serving_workers(session: Session, study_id: str, alive_s: float) -> int:
    """Workers running the study now (their row beat within ``alive_s`` seconds)."""
    since = utcnow().timestamp() - alive_s
    rows = session.scalars(
        select(WorkerRecord.heartbeat_at).where(
            WorkerRecord.study_id == study_id, WorkerRecord.stopped.is_(False)
        )
    )
    return sum(beat.timestamp() >= since for beat in rows)
