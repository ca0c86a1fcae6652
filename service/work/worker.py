"""Workers: claim runnable studies and run their trials until the budget is spent.

A study is runnable while it is queued, or running with trials left to start. Workers are
shared fairly (``service.store.scheduling``): a worker claims the study whose tenant runs the
fewest trials now, and when one of its slots frees while another study comes first, it stops
taking trials of its study, lets its running ones finish and claims again. Claiming takes no
lock that a trial would hold: the move from ``queued`` to ``running`` is one conditional
``UPDATE … WHERE status = 'queued'`` (atomic on SQLite and PostgreSQL alike), and several
workers (on any number of hosts) may then run the same study. Before it creates a
trial a worker reserves it on the study's row (``lifecycle.reserve_trial``, another
conditional ``UPDATE``), so together they create exactly ``n_trials``; a dead worker's trials
run again as re-runs, counted as such.

The trials run through the search driver that ``regtune tune`` uses too
(:class:`trainer.tuning.search.Search`): a stack of trial slots refilled as trials end, with this
worker's heartbeats for every trial in a slot (the per-trial engine's too). A trial whose
worker died goes silent; a periodic sweep of every worker (``Worker.sweep``) fails it after
the grace period and queues its parameters again (``trials.recover_stale``), so the study
still gets its full budget.
"""

from __future__ import annotations

import logging
import math
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
from service.store import lifecycle, scheduling, trials
from service.store.db import DATABASE_ERRORS, Database
from service.store.tables import StudyRecord, WorkerRecord, utcnow
from service.work.runner import StudyRunner
from trainer import configure_device, resolve_device, stop_on_signals

log = logging.getLogger("regtune.worker")
MAX_BACKOFF_S = 60.0
HEARTBEAT_WARNING = "Heartbeat of storage is supposed to be used with Study.optimize"


class Worker:
    def __init__(self, settings: Settings, device: str = "cpu") -> None:
        self.settings = settings
        self.device = resolve_device(device)
        configure_device(self.device)
        self.db = Database(settings)
        self._storage: RDBStorage | None = None  # connected on the first claim
        self.id = uuid.uuid4().hex
        self.stopping = threading.Event()
        self.beaten = 0.0  # when the worker's row last beat (monotonic)
        self.swept = -math.inf  # when dead workers' trials were last looked for (monotonic)
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
        """The study the fair order gives this worker (``service.store.scheduling``), marked
        running; None when no active study has work left."""
        self.sweep()
        with self.db.read() as session:
            pick = scheduling.next_study(session)
        if pick is None:
            return None
        lifecycle.mark(self.db, pick.id, "running", when=("queued",))
        with self.db.read() as session:
            # As the database has it now: running, or cancelled meanwhile (the runner stops).
            return session.get(StudyRecord, pick.id)

    def sweep(self) -> None:
        """Every ``heartbeat_s``: fail the trials of dead workers and queue their parameters
        again, and complete the studies that have nothing left to run (their last trial ended
        in a worker that then died, or in a retry that was the last)."""
        now = time.monotonic()
        if now - self.swept < self.settings.heartbeat_s:
            return
        self.swept = now
        with self.db.read() as session:
            stale = trials.stale_trials(session, self.settings.grace_s)
            rows = session.execute(
                select(StudyRecord.optuna_id, StudyRecord.optuna_name).where(
                    StudyRecord.optuna_id.in_(list(stale))
                )
            ).all()
            names = {optuna_id: name for optuna_id, name in rows}
            idle = [
                c.id for c in scheduling.candidates(session) if not c.has_work and c.running == 0
            ]
        for optuna_id, trial_ids in stale.items():
            if optuna_id not in names:
                continue  # a study deleted meanwhile
            study = optuna.load_study(study_name=names[optuna_id], storage=self.storage)
            recovered = trials.recover_stale(self.storage, study, trial_ids)
            if recovered:
                log.warning(
                    "%d trial(s) of %s failed: their worker stopped beating",
                    recovered,
                    names[optuna_id],
                )
        for done in idle:
            with self.db.read() as session:
                record = session.get(StudyRecord, done)
            if record is not None and record.status == "running":
                self.runner().finish(record)

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
            self.settings, self.device, self.db, self.storage, self.id, self.stopping, self.sweep
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
