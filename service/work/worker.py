"""Workers: claim runnable studies and run their trials until the budget is spent.

A study is runnable while it is queued, or running with trials left to start. Claiming
takes no lock that a trial would hold: the move from ``queued`` to ``running`` is one
conditional ``UPDATE … WHERE status = 'queued'`` (atomic on SQLite and PostgreSQL alike),
and several workers (on any number of hosts) may then run the same study. Before it starts a
trial a worker checks the budget counted across all of them (finished + running + queued
trials), so together they overshoot ``n_trials`` by at most the trials already running.

The trials run through the search driver that ``regtune tune`` uses too
(:class:`trainer.search.Search`): a stack of trial slots refilled as trials end, with this
worker's heartbeats for every trial in a slot (the per-trial engine's trials beat through
``study.optimize``). A trial whose worker died goes silent; the next worker that looks for
work fails it after the grace period and queues its parameters again
(``trials.recover_stale``), so the study still gets its full budget.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

import optuna
import torch
from optuna.storages import RDBStorage
from pydantic import ValidationError
from sqlalchemy import select, update

from service.settings import Settings
from service.store import lifecycle, stored_models, trials, uploads
from service.store.db import DATABASE_ERRORS, Database
from service.store.tables import ACTIVE, StudyRecord, WorkerRecord, utcnow
from trainer import artifact, layout
from trainer.datasets import DatasetError
from trainer.device import configure, resolve_device
from trainer.objective import TrialInterrupted, failure_reason
from trainer.optuna_internals import storage_of
from trainer.optuna_internals import trial_id as optuna_trial_id
from trainer.records import TrialRecord
from trainer.search import Search
from trainer.spec import SpecError, StudySpec
from trainer.study import Protocol, final_model, make_pruner, make_sampler

log = logging.getLogger("regtune.worker")
MAX_BACKOFF_S = 60.0
FAILED_TRIALS_LIMIT = 5  # failed trials, none completed: the study fails
CANCEL_CHECK_S = 2.0  # how often a training trial asks the database whether to stop
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
        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("worker %s stopping (signal %d)", self.id[:8], signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

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
            if counts.startable(record.n_trials):
                if lifecycle.mark(self.db, record.id, "running", when=("queued",)):
                    record.status = "running"  # this copy, as the database has it now
                return record
            if counts.running == 0:
                self.finish(record)
        return None

    # --- running ----------------------------------------------------------------------------

    def work_on(self, record: StudyRecord) -> None:
        log.info("worker %s runs study %s", self.id[:8], record.id)
        self.set_current(record.id)
        try:
            spec = StudySpec.model_validate(record.spec, context={"limits": self.settings.limits})
            with self.db.read() as session:
                dataset = uploads.resolve(session, record.tenant, spec.dataset)
            protocol = Protocol.of(spec, dataset, check_network=False)
        except (ValidationError, DatasetError, SpecError) as exc:
            lifecycle.mark(self.db, record.id, "failed", error=f"cannot run this study: {exc}")
            return
        study = optuna.load_study(
            study_name=record.optuna_name,
            storage=self.storage,
            # Each worker draws its own random stream, or parallel workers would propose alike.
            sampler=make_sampler(
                spec.model_copy(update={"seed": _worker_seed(spec.seed, self.id)})
            ),
            pruner=make_pruner(spec),
        )
        deadline = _deadline(spec, record)
        failed = False

        def budget() -> int:
            nonlocal failed
            failed = failed or self.failing(record)
            return 0 if failed else self.runnable(record, deadline)

        search = Search(
            study,
            spec,
            dataset,
            protocol.splits,
            metric=protocol.metric,
            size=layout.population_size(spec, dataset, self.device, self.settings.population),
            budget=budget,
            device=self.device,
            deadline=deadline,
            guard=self.heartbeats,
            should_stop=self.stop_check(record.id),
            passthrough=DATABASE_ERRORS,
            compile=self.settings.compile,
        )
        try:
            search.run()
        except TrialInterrupted as exc:
            self.requeue_interrupted(study, exc.trial_ids)
        except DATABASE_ERRORS:
            raise
        except Exception as exc:  # a bug or a broken dataset: fail loudly, keep the worker
            if self.deleted(record):  # its Optuna study went while a trial reported to it
                log.info("study %s was deleted while it ran: its trials stopped", record.id)
                return
            log.exception("study %s failed", record.id)
            lifecycle.mark(self.db, record.id, "failed", error=f"{exc.__class__.__name__}: {exc}")
            return
        finally:
            self.set_current(None)
        if not failed:
            self.finish(record)

    def deleted(self, record: StudyRecord) -> bool:
        with self.db.read() as session:
            return session.get(StudyRecord, record.id) is None

    def failing(self, record: StudyRecord) -> bool:
        """Fail the study when its first trials all fail for good (a bug, bad data, NaN).

        One failed trial is that trial's problem; ``FAILED_TRIALS_LIMIT`` of them with nothing
        completed or pruned is the study's, and running out its budget would only burn it.
        """
        assert record.optuna_id is not None
        with self.db.read() as session:
            counts = trials.count_trials(session, record.optuna_id)
        if counts.complete or counts.pruned or counts.fail < FAILED_TRIALS_LIMIT:
            return False
        reason = self.last_failure(record)
        lifecycle.mark(
            self.db,
            record.id,
            "failed",
            error=f"the first {counts.fail} trials failed; the last: {reason}",
        )
        log.warning("study %s failed: every trial fails (%s)", record.id, reason)
        return True

    def last_failure(self, record: StudyRecord) -> str:
        """The ``fail_reason`` of the study's last failed trial."""
        study = optuna.load_study(study_name=record.optuna_name, storage=self.storage)
        failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        reason = TrialRecord.of(failed[-1]).fail_reason if failed else "none"
        return reason or "no reason recorded"

    def runnable(self, record: StudyRecord, deadline: float | None) -> int:
        """How many trials this worker may start now (0: stop working on the study)."""
        if self.stopping.is_set() or (deadline is not None and time.time() > deadline):
            return 0
        with self.db.read() as session:
            if lifecycle.state_of(session, study_id=record.id) != "running":
                return 0
            assert record.optuna_id is not None
            counts = trials.count_trials(session, record.optuna_id)
        return counts.startable(record.n_trials)

    def stop_check(self, study_id: str) -> Callable[[], str | None]:
        """A throttled 'why should this trial stop?': shutdown, cancellation or deletion
        (None: it goes on). The reason becomes the stopped trials' ``fail_reason``."""
        last = 0.0

        def should_stop() -> str | None:
            nonlocal last
            if self.stopping.is_set():
                return "interrupted: its worker stopped"
            now = time.monotonic()
            if now - last < CANCEL_CHECK_S:
                return None
            last = now
            with self.db.read() as session:
                status = lifecycle.state_of(session, study_id=study_id)
            if status == "running":
                return None
            return (
                trials.CANCELLED if status == "cancelled" else f"the study is {status or 'deleted'}"
            )

        return should_stop

    def requeue_interrupted(self, study: optuna.Study, trial_ids: Sequence[int]) -> None:
        """Interrupted trials failed: queue their parameters again while the study runs (this
        worker is shutting down); a cancelled or deleted study's trials end with it."""
        with self.db.read() as session:
            status = lifecycle.state_of(session, optuna_name=study.study_name)
        if status != "running":
            log.info(
                "study %s %s: %d running trial(s) stopped",
                study.study_name,
                status or "deleted",
                len(trial_ids),
            )
            return
        retry = trials.retry_callback()
        for trial_id in trial_ids:
            retry(study, storage_of(study).get_trial(trial_id))

    @contextmanager
    def heartbeats(self, running: Sequence[optuna.Trial]) -> Iterator[None]:
        """Beat for the search's running trials (study.optimize beats for a trial of its own)."""
        storage = self.storage
        assert storage is not None
        stop = threading.Event()

        def beat() -> None:
            while True:
                for trial in list(running):  # the search adds and removes trials meanwhile
                    # A study deleted meanwhile has no trial left to beat for: the search,
                    # told so at its next epoch, stops.
                    with contextlib.suppress(KeyError):
                        storage.record_heartbeat(optuna_trial_id(trial))
                if stop.wait(self.settings.heartbeat_s):
                    return

        thread = threading.Thread(target=beat, name="regtune-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def finish(self, record: StudyRecord) -> None:
        """Mark the study completed once its budget is spent and no trial is still running."""
        assert record.optuna_id is not None
        with self.db.read() as session:
            counts = trials.count_trials(session, record.optuna_id)
            status = lifecycle.state_of(session, study_id=record.id)
        if status != "running" or counts.running or counts.waiting:
            return
        spec = StudySpec.model_validate(record.spec)
        deadline = _deadline(spec, record)
        timed_out = deadline is not None and time.time() > deadline
        if counts.remaining(record.n_trials) > 0 and not timed_out:
            return
        if counts.complete == 0:
            failure = f"no trial completed ({counts.as_dict()})"
            if counts.fail:
                failure += f"; the last failure: {self.last_failure(record)}"
            lifecycle.mark(self.db, record.id, "failed", error=failure)
            return
        test_score, model, error = self.final_model(record, spec)
        if stored_models.complete(
            self.db, record.id, test_score=test_score, model=model, error=error
        ):
            log.info(
                "study %s completed (model: %s)",
                record.id,
                f"{len(model)} bytes" if model is not None else "none",
            )

    def final_model(
        self, record: StudyRecord, spec: StudySpec
    ) -> tuple[float | None, bytes | None, str | None]:
        """Retrain the best configuration on all non-test rows: (test score, model file, error).

        The test score is that of the held-out test rows (None without a test split). A refit
        that fails (it diverges, runs out of memory, a bug) does not lose the study: it
        completes without a model, the reason in its ``error``. Database errors propagate
        (the worker retries the whole step).
        """
        try:
            with self.db.read() as session:
                dataset = uploads.resolve(session, record.tenant, spec.dataset)
            protocol = Protocol.of(spec, dataset, check_network=False)
            study = optuna.load_study(study_name=record.optuna_name, storage=self.storage)
            fitted, packed = final_model(
                spec,
                dataset,
                protocol,
                study.best_trial,
                device=self.device,
                study={"id": record.id, "name": record.name, "dataset": spec.dataset},
            )
            return fitted.test_score, artifact.to_bytes(packed), None
        except DATABASE_ERRORS:
            raise
        except Exception as exc:
            log.exception("study %s: the final model could not be built", record.id)
            return None, None, f"the final model could not be built: {failure_reason(exc)}"

    def set_current(self, study_id: str | None) -> None:
        with self.db.write() as session:
            session.execute(
                update(WorkerRecord)
                .where(WorkerRecord.id == self.id)
                .values(study_id=study_id, heartbeat_at=utcnow())
            )


def _deadline(spec: StudySpec, record: StudyRecord) -> float | None:
    """When the study's ``timeout_s`` runs out (epoch seconds), counted from its start."""
    if spec.timeout_s is None or record.started_at is None:
        return None
    return record.started_at.timestamp() + spec.timeout_s


def _worker_seed(seed: int, worker_id: str) -> int:
    return (seed * 1_000_003 + int(worker_id[:8], 16)) % 2**32
