"""The trial budget: a study runs exactly ``n_trials`` trials, however many processes search it.

Counting the storage's trials and then asking for more is a race: two processes that both
see one trial left both create one (a 3-trial study with 2 searchers of 3 slots each once
held 5). So a trial is *reserved* before it is created, by one atomic step that every process
searching the study sees, and of two processes racing for the last trial exactly one gets it.

Two kinds of trial need no reservation, because they were counted when they were queued:
re-runs (the parameters of a trial whose worker died or was stopped, queued again by
Optuna's ``RetryFailedTrialCallback``; the failed attempt and its re-run are both kept, and
shown as such) and trials a warm start queued. A search takes those from Optuna's queue first
(:func:`trainer.tuning.optuna_internals.take_queued`); only then does it reserve a fresh one.

Backends of :class:`Budget`: :class:`SharedCounter`, one integer in shared memory under its
lock, for ``regtune tune``'s searcher processes (children of one parent); the service's
conditional ``UPDATE`` of the study's row (``service.work.runner``), for workers on any
number of hosts.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from typing import Any, Protocol

import optuna

# Optuna's RetryFailedTrialCallback marks a re-run with the number of the trial it repeats.
RERUN_MARK = "failed_trial"


class Budget(Protocol):
    """What a search asks before it starts a trial."""

    def open(self) -> bool:
        """Whether the search may start trials now at all (not stopped, cancelled, failed,
        past its deadline). Queued re-runs start only while it is open."""
        ...

    def reserve(self) -> bool:
        """Take one fresh trial of the budget, atomically for every process that searches
        the study; False when the budget is spent."""
        ...


def is_rerun(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that repeats the parameters of an earlier one that failed (it costs no budget)."""
    return RERUN_MARK in trial.system_attrs


def spent(study: optuna.Study) -> int:
    """The budget a study has used: its trials but the re-runs (queued ones included)."""
    return sum(not is_rerun(t) for t in study.get_trials(deepcopy=False))


@dataclass
class SharedCounter:
    """A :class:`Budget` in shared memory: ``taken`` of ``n_trials``, under one lock.

    Made in the parent before it forks or spawns its searchers (a ``multiprocessing.Value``
    travels to a child only as a process argument), and started at what the storage already
    holds, so a resumed study runs only the trials it still lacks.
    """

    n_trials: int
    taken: Any  # multiprocessing.Value("q"): typeshed gives its synchronized wrapper no type

    @classmethod
    def starting_at(
        cls, n_trials: int, spent: int, context: Any = multiprocessing
    ) -> SharedCounter:
        """``context``: the multiprocessing context that starts the searchers."""
        return cls(n_trials, context.Value("q", spent))

    def open(self) -> bool:
        return True

    def reserve(self) -> bool:
        with self.taken.get_lock():
            if self.taken.value >= self.n_trials:
                return False
            self.taken.value += 1
            return True
