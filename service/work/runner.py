"""Running one claimed study: its search, its failure policy, its end and its final model.

A :class:`StudyRunner` runs the study's trials through :class:`trainer.tuning.search.Search` with
this worker's heartbeats, stops them when the study is cancelled, deleted or its worker
stops, fails the study when its first trials all fail, and, once the budget is spent and no
trial is running, retrains the best trial and completes the study with its model.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
import torch
from optuna.storages import RDBStorage
from pydantic import ValidationError
from sqlalchemy import update

from service.settings import Settings
from service.store import lifecycle, scheduling, stored_models, trials, uploads
from service.store.db import DATABASE_ERRORS, Database
from service.store.tables import StudyRecord, WorkerRecord, utcnow
from trainer import (
    SAMPLER_STREAM,
    CVProtocol,
    DatasetError,
    Search,
    SpecError,
    StudySpec,
    TrialInterrupted,
    TrialRecord,
    TrialTraining,
    choose_engine,
    chosen_trial,
    derived_seed,
    failure_reason,
    final_model,
    make_pruner,
    make_sampler,
    optuna_internals,
    to_bytes,
)

log = logging.getLogger("regtune.worker")
FAILED_TRIALS_LIMIT = 5  # failed trials, none completed: the study fails
CANCEL_CHECK_S = 2.0  # how often a training trial asks the database whether to stop
# How long a study's completion waits for a reserved trial to appear (reserving and creating a
# trial are two steps, milliseconds apart), and how often it looks.
RESERVATION_GRACE_S = 5.0
RESERVATION_POLL_S = 0.05


@dataclass
class StudyRunner:
    """What a worker lends the study it runs: its settings, device, database and storage."""

    settings: Settings
    device: torch.device
    db: Database
    storage: RDBStorage
    worker_id: str
    stopping: threading.Event
    # The worker's sweep for dead workers' trials, run between trials too: a busy worker
    # recovers them as soon as an idle one would.
    sweep: Callable[[], None] = lambda: None

    def run(self, record: StudyRecord) -> None:
        """Run ``record``'s search until its budget is spent or it stops; then, if it is done,
        retrain its best trial and complete it."""
        try:
            spec = StudySpec.model_validate(record.spec, context={"limits": self.settings.limits})
            with self.db.read() as session:
                dataset = uploads.resolve(session, record.tenant, spec.dataset)
            protocol = CVProtocol.of(spec, dataset, check_network=False)
        except (ValidationError, DatasetError, SpecError) as exc:
            lifecycle.mark(self.db, record.id, "failed", error=f"cannot run this study: {exc}")
            return
        study = optuna.load_study(
            study_name=record.optuna_name,
            storage=self.storage,
            # Each worker draws its own random stream, or parallel workers would propose alike.
            sampler=make_sampler(
                spec.model_copy(update={"seed": sampler_seed(spec.seed, self.worker_id)})
            ),
            pruner=make_pruner(spec),
        )
        budget = StudyBudget(self, record, _deadline(spec, record))
        training = TrialTraining(
            spec,
            dataset,
            protocol,
            device=self.device,
            should_stop=self.stop_check(record.id),
            passthrough=DATABASE_ERRORS,
        )
        engine = choose_engine(
            training, population=self.settings.population, compile=self.settings.compile
        )
        search = Search(study, engine, budget, deadline=budget.deadline, guard=self.heartbeats)
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
        if not budget.failed:
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

    def runnable(self, record: StudyRecord, deadline: float | None) -> bool:
        """Whether this worker may start trials of the study now."""
        if self.stopping.is_set() or (deadline is not None and time.time() > deadline):
            return False
        with self.db.read() as session:
            return lifecycle.state_of(session, study_id=record.id) == "running"

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
            retry(study, optuna_internals.storage_of(study).get_trial(trial_id))

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
                        storage.record_heartbeat(optuna_internals.trial_id(trial))
                self.beat_row()
                if stop.wait(self.settings.heartbeat_s):
                    return

        thread = threading.Thread(target=beat, name="regtune-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def beat_row(self) -> None:
        """The worker's own row says it is alive while it trains (a study's status counts the
        workers serving it by these rows); a missed beat is only a late one."""
        with contextlib.suppress(*DATABASE_ERRORS), self.db.write() as session:
            session.execute(
                update(WorkerRecord)
                .where(WorkerRecord.id == self.worker_id)
                .values(heartbeat_at=utcnow())
            )

    def progress(self, record: StudyRecord) -> tuple[trials.TrialCounts, str | None, int]:
        """The study's trial counts, its status and how much of its budget is reserved."""
        assert record.optuna_id is not None
        with self.db.read() as session:
            counts = trials.count_trials(session, record.optuna_id)
            status = lifecycle.state_of(session, study_id=record.id)
            reserved = lifecycle.reserved(session, record.id)
        return counts, status, reserved

    def finish(self, record: StudyRecord) -> None:
        """Mark the study completed once its budget is spent and no trial is still running.

        A trial is reserved first and created a moment later (:mod:`trainer.tuning.budget`),
        so another worker's trial may be between the two: while fewer trials have used budget
        than are reserved, this waits for it, up to ``RESERVATION_GRACE_S`` (a worker that
        died between the two leaves a reservation that never becomes a trial)."""
        counts, status, reserved = self.progress(record)
        if status != "running" or counts.running or counts.waiting:
            return
        spec = StudySpec.model_validate(record.spec)
        deadline = _deadline(spec, record)
        timed_out = deadline is not None and time.time() > deadline
        if reserved < record.n_trials and not timed_out:
            return
        waited = time.monotonic() + RESERVATION_GRACE_S
        while counts.finished < reserved and time.monotonic() < waited:
            time.sleep(RESERVATION_POLL_S)
            counts, status, reserved = self.progress(record)
            if status != "running" or counts.running or counts.waiting:
                return  # its trial exists now: the worker that runs it finishes the study
        if counts.finished < reserved:
            log.warning(
                "study %s: %d reserved trial(s) never started (a worker died?); completing it",
                record.id,
                reserved - counts.finished,
            )
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
        """Retrain the best configuration (or the one a trade-off's ``final_model.pick``
        chooses: ``trainer.chosen_trial``) on all non-test rows: (test score, model file, error).

        The test score is that of the held-out test rows (None without a test split). A refit
        that fails (it diverges, runs out of memory, a bug) does not lose the study: it
        completes without a model, the reason in its ``error``. Database errors propagate
        (the worker retries the whole step).
        """
        try:
            with self.db.read() as session:
                dataset = uploads.resolve(session, record.tenant, spec.dataset)
            protocol = CVProtocol.of(spec, dataset, check_network=False)
            study = optuna.load_study(study_name=record.optuna_name, storage=self.storage)
            fitted, packed = final_model(
                spec,
                dataset,
                protocol,
                chosen_trial(study, spec),
                device=self.device,
                study={"id": record.id, "name": record.name, "dataset": spec.dataset},
            )
            return fitted.test_score, to_bytes(packed), None
        except DATABASE_ERRORS:
            raise
        except Exception as exc:
            log.exception("study %s: the final model could not be built", record.id)
            return None, None, f"the final model could not be built: {failure_reason(exc)}"


@dataclass
class StudyBudget:
    """The study's :class:`trainer.tuning.budget.Budget`: open while the study runs, this worker
    does not stop, its deadline has not passed, its trials do not all fail and no other study
    comes first (:mod:`service.store.scheduling`); each fresh trial reserved on the study's
    row (:func:`service.store.lifecycle.reserve_trial`)."""

    runner: StudyRunner
    record: StudyRecord
    deadline: float | None
    failed: bool = False  # the study was failed for its failing trials

    switching: bool = False  # another study comes first: the running trials drain

    def open(self) -> bool:
        """Also False while another study comes first in the fair order: the worker then lets
        its running trials finish and claims again (a tie keeps it here)."""
        self.runner.sweep()
        self.failed = self.failed or self.runner.failing(self.record)
        if self.failed or not self.runner.runnable(self.record, self.deadline):
            return False
        with self.runner.db.read() as session:
            keeps = scheduling.keeps(session, self.record.id)
        if not keeps and not self.switching:
            log.info("study %s: another study comes first; this worker switches", self.record.id)
        self.switching = not keeps
        return keeps

    def reserve(self) -> bool:
        with self.runner.db.write() as session:
            return lifecycle.reserve_trial(session, self.record.id)


def _deadline(spec: StudySpec, record: StudyRecord) -> float | None:
    """When the study's ``timeout_s`` runs out (epoch seconds), counted from its start."""
    if spec.timeout_s is None or record.started_at is None:
        return None
    return record.started_at.timestamp() + spec.timeout_s


def sampler_seed(seed: int, worker_id: str) -> int:
    """This worker's own sampler stream for a study of ``seed`` (its id names the stream)."""
    return derived_seed(seed, SAMPLER_STREAM, int(worker_id[:8], 16))
