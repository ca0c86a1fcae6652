"""Optuna's ask-and-tell for one run of a search: which trial may start, and how each is told.

A trial is asked only when an engine has room for it: a queued one first (a re-run of a trial
whose worker died, a warm start), else a fresh one once the budget reserves it
(:mod:`trainer.tuning.budget`); none once the budget is closed or the deadline has passed.
From the ask to the tell a trial is *live*: the live trials are those a worker's heartbeats
keep alive (:data:`trainer.tuning.search.Guard`).

A trial is told with its record written first (:class:`~trainer.tuning.records.TrialRecord`).
A long database outage can make a live trial look dead to the other workers: its parameters
are then queued again and Optuna refuses to tell it, so its result is dropped with one warning
rather than raised. The callbacks are shown each trial that an engine tells; the trials failed
because the search was interrupted are not shown to them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from trainer.tuning.budget import Budget
from trainer.tuning.optuna_internals import create_trial, storage_of, take_queued, trial_id
from trainer.tuning.records import TrialRecord

log = logging.getLogger("regtune.trainer")

Callback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass
class AskAndTell:
    """Asks ``study`` for trials within ``budget`` until ``deadline`` (epoch seconds; it stops
    new trials, not running ones), tells their outcomes and shows them to ``callbacks``."""

    study: optuna.Study
    budget: Budget
    deadline: float | None = None
    callbacks: Sequence[Callback] = ()
    live: list[optuna.Trial] = field(default_factory=list, init=False)

    def ask(self) -> optuna.Trial | None:
        """A queued trial (a re-run, a warm start), else a fresh one if the budget reserves
        it; None when no trial may start."""
        if self.past_deadline() or not self.budget.open():
            return None
        trial = take_queued(self.study)
        if trial is None:
            if not self.budget.reserve():
                return None
            trial = create_trial(self.study)
        self.live.append(trial)
        return trial

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline

    def tell(
        self,
        trial: optuna.Trial,
        record: TrialRecord,
        *,
        value: float | Sequence[float] | None = None,
        state: TrialState | None = None,
    ) -> FrozenTrial:
        """Write ``record`` and tell ``trial``'s outcome: completed with ``value`` (a trade-off
        study's two: :func:`trainer.tuning.trade_off.told`), or ended in ``state``; unless a
        crash recovery failed the trial first (its result is then dropped)."""
        self.forget(trial)
        try:
            record.write(trial)
            return self.study.tell(trial, values=value, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            return self.drop_result(trial)

    def fail(self, trial: optuna.Trial, reason: str) -> FrozenTrial:
        """Tell ``trial`` failed, with ``reason`` as its ``fail_reason``."""
        return self.tell(trial, TrialRecord(fail_reason=reason), state=TrialState.FAIL)

    def drop_result(self, trial: optuna.Trial) -> FrozenTrial:
        """End this run of a trial declared dead while it trained (its worker was cut off from
        the database for longer than the grace): its parameters are queued again, so its
        result is dropped here, with one line. Returns the trial as the storage holds it."""
        self.forget(trial)
        log.warning(
            "result of trial %d dropped: it was declared dead while it trained, and its "
            "parameters run again",
            trial.number,
        )
        return storage_of(self.study).get_trial(trial_id(trial))

    def forget(self, trial: optuna.Trial) -> None:
        """``trial`` is no longer live: its heartbeats stop."""
        if trial in self.live:
            self.live.remove(trial)

    def notify(self, frozen: FrozenTrial) -> None:
        """Show the callbacks a trial that was told."""
        for callback in self.callbacks:
            callback(self.study, frozen)
