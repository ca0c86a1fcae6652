"""One study searched by several processes over one storage: every core for ``regtune tune``.

Small models train fastest on a CPU as one 1-thread process per core (BENCHMARKS.md,
"Engines"): the stacked elementwise work is bound by memory traffic, which threads of one
process share badly. So, as the service's workers do, ``tune`` starts N searcher processes
over one Optuna storage; without a ``--storage`` that is a journal file in a temporary
directory (Optuna's file-locked append-only log, made for several processes). Each process
runs the same search (:class:`trainer.tuning.search.Search`) with its own sampler stream, and the
budget is one counter in shared memory (:class:`trainer.tuning.budget.SharedCounter`) that every
searcher reserves each fresh trial from, so together they create exactly ``n_trials``. The parent
shows the progress, then retrains the best trial (:func:`trainer.tuning.study.conclude`).

No searcher outlives the parent: they are stopped when it stops (Ctrl-C included), and a
searcher whose parent died (SIGKILL) exits by itself within a second.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from trainer import rng
from trainer.data.datasets import Dataset
from trainer.device import usable_cores
from trainer.engines import layout
from trainer.lifetime import on_parent_death
from trainer.specs.study_spec import StudySpec
from trainer.tuning.budget import SharedCounter, spent
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.optuna_internals import storage_of, trial_id, write_attrs
from trainer.tuning.optuna_study import create_study
from trainer.tuning.records import TrialRecord
from trainer.tuning.study import StudyOutcome, conclude, run_study

POLL_S = 0.25
Progress = Callable[[optuna.Study], None]  # shown the study as its trials finish
StorageRef = str | Path  # a database URL, or a journal file


def open_storage(ref: StorageRef) -> str | BaseStorage:
    if isinstance(ref, Path):
        return JournalStorage(JournalFileBackend(str(ref)))
    return ref


@contextmanager
def storage_for(storage: str | None) -> Iterator[StorageRef]:
    """``storage`` as given, or a journal file that lives as long as the search."""
    if storage is not None:
        yield storage
        return
    with tempfile.TemporaryDirectory(prefix="regtune-tune-") as directory:
        yield Path(directory) / "study.journal"


def searcher(
    spec: StudySpec,
    dataset: Dataset,
    protocol: CVProtocol,
    ref: StorageRef,
    study_name: str,
    *,
    device: str,
    population: int | None,
    compile: bool | None,
    sampler_seed: int,
    parent: int,
    budget: SharedCounter,
) -> None:
    """A searcher process: one torch thread, the study's search, no refit."""
    on_parent_death(parent, signal.SIGKILL)
    # What the parent imported stays for good: a full collection would walk its ~270k objects
    # for nothing (0.17 s of a four-trial search, measured), and touch their pages.
    gc.freeze()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_study(
        spec,
        dataset,
        protocol=protocol,
        storage=open_storage(ref),
        study_name=study_name,
        device=device,
        refit_best=False,
        population=population,
        sampler_seed=sampler_seed,
        compile=compile,
        budget=budget,
    )


def fail_leftovers(study: optuna.Study, reason: str) -> None:
    """Trials still RUNNING when no searcher is (a tune that was killed) are failed: nothing
    will ever finish them, and they would hold the budget."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage, key = storage_of(study), trial_id(trial)
        write_attrs(storage, key, TrialRecord(fail_reason=reason).to_attrs())
        storage.set_trial_state_values(key, TrialState.FAIL)


def run_parallel_study(
    spec: StudySpec,
    dataset: Dataset,
    *,
    processes: int,
    storage: str | None = None,
    study_name: str | None = None,
    device: str = "cpu",
    population: int | None = None,
    compile: bool | None = None,
    progress: Progress | None = None,
    display: AbstractContextManager[object] | None = None,
    refit_best: bool = True,
    protocol: CVProtocol | None = None,
) -> StudyOutcome:
    """:func:`trainer.tuning.study.run_study` with ``processes`` searcher processes (which take
    ``protocol``, or the one made here: they never draw the rows themselves).

    ``progress(study)`` is called as trials finish, inside ``display`` (a progress
    bar, entered once the searchers have started: a forked process must not inherit its
    drawing thread)."""
    protocol = protocol or CVProtocol.of(spec, dataset)
    if population is None and torch.device(device).type == "cpu":
        population = layout.cpu_population(spec.n_trials, processes)
    # The searchers must open one study by name; Optuna names an unnamed one the same way.
    name = study_name or spec.name or f"no-name-{uuid.uuid4()}"
    with storage_for(storage) as ref:
        study = create_study(spec, protocol.metric, storage=open_storage(ref), study_name=name)
        fail_leftovers(study, "interrupted: the tune run that started it ended")
        # On a CPU the searchers are forked: they start at once, with torch and the data
        # already imported (as DataLoader workers are), before this process starts threads of
        # its own. CUDA cannot be forked into use: a GPU's searcher is spawned.
        method = "fork" if torch.device(device).type == "cpu" else "spawn"
        context: Any = multiprocessing.get_context(method)  # typeshed: BaseContext, no Process
        budget = SharedCounter.starting_at(spec.n_trials, spent(study), context)
        children: list[BaseProcess] = [
            context.Process(
                target=searcher,
                args=(spec, dataset, protocol, ref, name),
                kwargs={
                    "device": device,
                    "population": population,
                    "compile": compile,
                    "sampler_seed": rng.derived_seed(spec.seed, rng.SAMPLER_STREAM, i),
                    "parent": os.getpid(),
                    "budget": budget,
                },
                name=f"regtune-searcher-{i}",
                daemon=True,
            )
            for i in range(processes)
        ]
        try:
            for child in children:
                child.start()
            with display if display is not None else nullcontext():
                while any(child.is_alive() for child in children):
                    if progress is not None:
                        progress(study)
                    time.sleep(POLL_S)
                if progress is not None:
                    progress(study)
        finally:
            for child in children:
                if child.is_alive():
                    child.terminate()
            for child in children:
                child.join()
            fail_leftovers(study, "interrupted: its searcher process stopped")
        failed = [c.name for c in children if c.exitcode != 0]
        if failed:
            raise RuntimeError(f"searcher processes {failed} exited with an error (see above)")
        # The journal file is about to go: the outcome is read from an in-memory copy.
        if storage is None:
            copy = optuna.create_study(
                study_name=name, directions=study.directions, sampler=study.sampler
            )
            copy.add_trials(study.get_trials())
            for key, value in study.user_attrs.items():
                copy.set_user_attr(key, value)
            study = copy
        threads = torch.get_num_threads()
        torch.set_num_threads(max(threads, usable_cores()))  # the searchers are done: all cores
        try:
            return conclude(study, spec, dataset, protocol, refit_best=refit_best, device=device)
        finally:
            torch.set_num_threads(threads)
