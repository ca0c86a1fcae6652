"""Workers: claim runnable studies and run their trials until the budget is spent.

A study is runnable while it is queued, or running with trials left to start. Claiming
takes no lock that a trial would hold: the move from ``queued`` to ``running`` is one
conditional ``UPDATE … WHERE status = 'queued'`` (atomic on SQLite and PostgreSQL alike),
and several workers (on any number of hosts) may then run the same study. Before it creates a
trial a worker reserves it on the study's row (``lifecycle.reserve_trial``, another
conditional ``UPDATE``), so together they create exactly ``n_trials``; a dead worker's trials
run again as re-runs, counted as such.

The trials run through the search driver that ``regtune tune`` uses too
(:class:`trainer.search.Search`): a stack of trial slots refilled as trials end, with this
worker's heartbeats for every trial in a slot (the per-trial engine's too). A trial whose
worker died goes silent; the next worker that looks for work fails it after the grace period
and queues its parameters again (``trials.recover_stale``), so the study still gets its full
budget.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import warnings

import optuna
import torch
from optuna.storages import RDBStorage
from sqlalchemy import select, update

from service.settings import Settings
from service.store import lifecycle, trials
from service.store.db import DATABASE_ERRORS, Database
from service.store.tables import ACTIVE, StudyRecord, WorkerRecord, utcnow
from service.work.runner import StudyRunner
from trainer.device import configure, resolve_device
from trainer.lifetime import stop_on_signals

log = logging.getLogger("regtune.worker")
MAX_BACKOFF_S = 60.0
HEARTBEAT_WARNING = "Heartbeat of storage is supposed to be used with Study.optimize"


class Worker:
    def __init__(self, settings: Settings, device: str = "cpu") -> None:
        self.settings = settings
        self.device = resolve_device(device)
        configure(self.device)
        self.db = Database(settings)
        self._storage: RDBStorage | None = None  # connected on the first claim
        self.id = uuid.uuid4().hex
        self.stopping = threading.Event()
        self.beaten = 0.0  # when the worker's row last beat (monotonic)
        # The worker beats for its trials itself (Worker.heartbeats), so Optuna's warning at
        # every ask that heartbeats belong to Study.optimize does not apply to it.
        warnings.filterwarnings("ignore", HEARTBEAT_WARNING, UserWarning)

    # --- lifecycle ------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> None:
        """Work until stopped (SIGTERM/SIGINT); with ``once``, until no study is runnable.

        Losing the database (not up yet, restarting, network) never kills the worker: it
        waits with exponential back-off and carries on where it was.
        """
        if self.settings.worker_nice:
            os.nice(self.settings.worker_nice)  # the API answers pollers first
        if self.settings.worker_idle_priority and hasattr(os, "SCHED_IDLE"):
            # Before any thread starts: threads inherit it (the heartbeat's included).
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        torch.set_num_threads(self.settings.threads)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        log.info(
            "worker %s started on %s (pid %d, %d thread(s))",
            self.id[:8],
            self.device,
            os.getpid(),
            self.settings.threads,
        )
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                if self._storage is None:
                    self.connect()
                record = self.claim()
                if record is None:
                    if once:
                        break
                    if time.monotonic() - self.beaten >= self.settings.heartbeat_s:
                        self.set_current(None)  # idle and alive: the row's heartbeat says so
                    self.stopping.wait(self.settings.poll_s)
                else:
                    self.work_on(record)
                backoff = 1.0
            except DATABASE_ERRORS as exc:
                log.warning(
                    "database unavailable (%s: %s); retrying in %.0fs",
                    exc.__class__.__name__,
                    str(exc).splitlines()[0][:200],
                    backoff,
                )
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        self.unregister()

    @property
    def storage(self) -> RDBStorage:
        """Optuna's storage on the service database (the worker connects before it claims)."""
        assert self._storage is not None, "connect() first"
        return self._storage

    def connect(self) -> None:
        """Bring the schema up to date (workers may start before the API) and register."""
        self.db.migrate()
        self._storage = trials.make_storage(self.settings)
        self.register()
        log.info("worker %s ready on %s", self.id[:8], self.device)

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the worker gracefully (its running trials are re-queued)."""

        def announce(signum: int) -> None:
            log.info("worker %s stopping (signal %d)", self.id[:8], signum)

        stop_on_signals(self.stopping, announce)

    def register(self) -> None:
        with self.db.write() as session:
            session.add(
                WorkerRecord(
                    id=self.id, host=socket.gethostname(), pid=os.getpid(), device=str(self.device)
                )
            )

    def unregister(self) -> None:
        try:
            with self.db.write() as session:
                session.execute(
                    update(WorkerRecord)
                    .where(WorkerRecord.id == self.id)
                    .values(stopped=True, study_id=None, heartbeat_at=utcnow())
                )
        except DATABASE_ERRORS:
            pass
        self.db.dispose()

    # --- claiming ---------------------------------------------------------------------------

    def claim(self) -> StudyRecord | None:
        """The oldest queued or running study with budget left, marked running."""
        with self.db.read() as session:
            candidates = list(
                session.scalars(
                    select(StudyRecord)
                    .where(StudyRecord.status.in_(ACTIVE))
                    .order_by(StudyRecord.created_at)
                )
            )
        for record in candidates:
            assert record.optuna_id is not None
            study = optuna.load_study(study_name=record.optuna_name, storage=self.storage)
            with self.db.read() as session:
                # A dead worker's trial goes back in the queue.
                trials.recover_stale(session, self.storage, study, self.settings.grace_s)
                counts = trials.count_trials(session, record.optuna_id)
            if counts.waiting or record.reserved < record.n_trials:
                if lifecycle.mark(self.db, record.id, "running", when=("queued",)):
                    record.status = "running"  # this copy, as the database has it now
                return record
            if counts.running == 0:
                self.runner().finish(record)
        return None

    # --- running ----------------------------------------------------------------------------

    def work_on(self, record: StudyRecord) -> None:
        log.info("worker %s runs study %s", self.id[:8], record.id)
        self.set_current(record.id)
        try:
            self.runner().run(record)
        finally:
            self.set_current(None)

    def runner(self) -> StudyRunner:
        return StudyRunner(
            self.settings, self.device, self.db, self.storage, self.id, self.stopping
        )

    def set_current(self, study_id: str | None) -> None:
        """Record which study this worker runs (None: idle) and that it is alive now."""
        self.beaten = time.monotonic()
        with self.db.write() as session:
            session.execute(
                update(WorkerRecord)
                .where(WorkerRecord.id == self.id)
                .values(study_id=study_id, heartbeat_at=utcnow())
            )
