"""The search driver: one loop that asks Optuna for trials, trains them and tells the results.

``regtune tune`` (:func:`trainer.tuning.study.run_study`) and the service's workers both run a
study through :class:`Search`; they differ only in what they pass: the budget (a
:class:`trainer.tuning.budget.Budget` that reserves each fresh trial atomically, so the study holds
exactly ``n_trials``), when to stop, and a guard that beats for running trials.

With the population engine a worker keeps P slots of K folds training as one stack
(:class:`trainer.engines.population.Population`, one per shape when widths, batch size or optimizer
are searched). After every epoch each trial that trained is told its fold-mean value
(``trial.report``); a trial that completes, is pruned or fails is told to Optuna at once and
its slot takes the next asked trial at the next epoch boundary. The pruner therefore sees
results as soon as they exist, and a pruned trial costs only its own epochs.

A pruner can only prune against completed trials, so while fewer than P trials have
completed the number training at once is the number completed (at least 1): 1, 1, 2, 3, …
until P. Studies with Wilcoxon pruning, which decides between folds, train one trial at a time
in the per-trial engine (``size == 0``), by the same ask-and-tell.

Errors of training never end the search: out of device memory, the stack is rebuilt with
half the slots (its trials start again from scratch, which gives the same results since a
trial does not depend on its slot); a single trial that does not fit fails. Any other error
fails the trials of its stack with the reason. Exceptions of the ``passthrough`` types (a
caller's database errors) propagate unchanged.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from trainer.data.datasets import Dataset
from trainer.data.splits import Split
from trainer.engines import compiled, layout
from trainer.engines.per_trial import DivergedError
from trainer.engines.population import Population, ShapeKey, SlotEpoch, shape_key
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import Metric, StudySpec
from trainer.tuning.budget import Budget
from trainer.tuning.objective import (
    Objective,
    TrialFailed,
    TrialInterrupted,
    failure_reason,
    suggest,
    trial_seed,
)
from trainer.tuning.optuna_internals import create_trial, storage_of, take_queued, trial_id
from trainer.tuning.records import TrialRecord

log = logging.getLogger("regtune.trainer")

Callback = Callable[[optuna.Study, FrozenTrial], None]
# Wraps the whole search; gets the live list of running trials (a worker beats for them).
Guard = Callable[[Sequence[optuna.Trial]], AbstractContextManager[object]]
# Builds a stack: the seam where tests put a population that fails on purpose.
Engine = Callable[..., Population]


def ramped(study: optuna.Study, spec: StudySpec, size: int) -> int:
    """The population size now: ``size``, or the number of completed trials while that is less."""
    if spec.pruner.kind == "none" or size == 1:
        return size
    # Optuna's percentile/median pruners compare against COMPLETE trials only.
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(1, min(size, len(completed)))


@dataclass
class Running:
    """A trial asked from Optuna and what it trains."""

    trial: optuna.Trial
    config: TrialConfig


@dataclass
class Search:
    """Run ``study``'s trials until ``budget`` grants none and none is running.

    ``budget`` is asked only when a slot is free: queued re-runs start while it is
    ``open()``, a fresh trial only once it ``reserve()``s one; ``deadline`` (epoch seconds)
    stops new trials, not running ones; ``should_stop`` is polled every epoch; a reason it
    answers (None: go on) interrupts every running trial (:class:`TrialInterrupted`, with
    their ids, after they are recorded as failed with it).
    """

    study: optuna.Study
    spec: StudySpec
    dataset: Dataset
    splits: Sequence[Split]
    metric: Metric
    size: int  # trials per stack; 0: the per-trial engine
    budget: Budget
    device: torch.device | str = "cpu"
    deadline: float | None = None
    callbacks: Sequence[Callback] = ()
    guard: Guard | None = None
    should_stop: Callable[[], str | None] | None = None
    passthrough: tuple[type[BaseException], ...] = ()
    engine: Engine = Population
    compile: bool | None = None  # the step under torch.compile; None: on a GPU only
    stacks: dict[ShapeKey, Population] = field(default_factory=dict, init=False)
    running: dict[tuple[ShapeKey, int], Running] = field(default_factory=dict, init=False)
    pending: deque[Running] = field(default_factory=deque, init=False)
    live: list[optuna.Trial] = field(default_factory=list, init=False)
    ramp_done: bool = field(default=False, init=False)

    def run(self) -> None:
        if self.size == 0:
            self.run_per_trial()
            return
        with self.guard(self.live) if self.guard is not None else nullcontext():
            try:
                while self.fill() or self.running or self.pending:
                    self.epoch()
            except TrialInterrupted as exc:
                ids = [trial_id(self.fail(r.trial, str(exc))) for r in self.untold()]
                raise TrialInterrupted(str(exc), trial_ids=ids) from exc

    def expired(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline

    # --- the per-trial engine ------------------------------------------------------------

    def run_per_trial(self) -> None:
        objective = Objective(
            self.spec,
            self.dataset,
            self.splits,
            metric=self.metric,
            device=self.device,
            should_stop=self.should_stop,
            passthrough=self.passthrough,
            note=layout.per_trial_reason(self.spec, self.dataset),
        )
        with self.guard(self.live) if self.guard is not None else nullcontext():
            while (trial := self.next_trial()) is not None:
                self.told(self.run_one(objective, trial))

    def run_one(self, objective: Objective, trial: optuna.Trial) -> FrozenTrial:
        """Train one trial in the per-trial engine and tell its outcome (the objective has
        recorded why it failed, if it did)."""
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            return self.finish(trial, TrialRecord(), state=TrialState.PRUNED)
        except (DivergedError, TrialFailed):
            return self.finish(trial, TrialRecord(), state=TrialState.FAIL)
        except TrialInterrupted:
            self.finish(trial, TrialRecord(), state=TrialState.FAIL)
            raise
        except optuna.exceptions.UpdateFinishedTrialError:
            return self.dropped(trial)
        return self.finish(trial, TrialRecord(), values=value)

    def next_trial(self) -> optuna.Trial | None:
        """A queued trial (a re-run, a warm start), else a fresh one if the budget reserves
        it; None when no trial may start."""
        if self.expired() or not self.budget.open():
            return None
        trial = take_queued(self.study)
        if trial is None:
            if not self.budget.reserve():
                return None
            trial = create_trial(self.study)
        self.live.append(trial)
        return trial

    # --- the population engine -----------------------------------------------------------

    def capacity(self) -> int:
        """How many trials may train at once now (the pruner's warm-up, then ``size``)."""
        if self.ramp_done:
            return self.size
        now = ramped(self.study, self.spec, self.size)
        self.ramp_done = now >= self.size
        return now

    def fill(self) -> bool:
        """Give free slots to waiting trials, then to newly asked ones; True if any started."""
        started = False
        while self.pending and len(self.running) < self.capacity():
            started |= self.place(self.pending.popleft())
        for _ in range(self.capacity() - len(self.running) - len(self.pending)):
            trial = self.next_trial()
            if trial is None:
                break
            try:
                config = TrialConfig.from_values(self.spec, suggest(trial, self.spec))
                TrialRecord(config=config.hyperparameters()).write(trial)
            except self.passthrough:
                raise
            except Exception as exc:  # e.g. a sampler that cannot draw: the trial fails
                self.tell_failed(trial, failure_reason(exc))
                continue
            started |= self.place(Running(trial, config))
        return started

    def place(self, entry: Running) -> bool:
        """Put ``entry`` in a free slot of its shape's stack (built on first use)."""
        key = shape_key(entry.config)
        try:
            stack = self.stacks.get(key)
            if stack is None:
                stack = self.stacks[key] = self.engine(
                    self.dataset,
                    self.splits,
                    entry.config,
                    slots=self.size,
                    metric=self.metric,
                    device=self.device,
                    precision=self.spec.training.precision,
                    compile=compiled.wanted(torch.device(self.device), self.compile),
                )
            slot = stack.free_slots()[0]
            stack.assign(slot, entry.config, trial_seed(self.spec.seed, entry.trial.number))
        except torch.OutOfMemoryError as exc:
            self.stacks.pop(key, None)
            self.out_of_memory(exc, [entry])
            return False
        except self.passthrough:
            raise
        except Exception as exc:
            log.exception("trial %d could not start", entry.trial.number)
            self.tell_failed(entry.trial, failure_reason(exc))
            return False
        self.running[(key, slot)] = entry
        return True

    def epoch(self) -> None:
        """One epoch of every stack, then each trial that trained is told how it stands."""
        for key, stack in list(self.stacks.items()):
            if stack.occupied() == 0:
                del self.stacks[key]
                continue
            try:
                stack.train_epoch()
                reports = stack.end_epoch()
            except torch.OutOfMemoryError as exc:
                del self.stacks[key]
                self.out_of_memory(exc, self.evict(key))
                continue
            except TrialInterrupted:
                raise
            except self.passthrough:
                raise
            except Exception as exc:
                numbers = [r.trial.number for (k, _), r in self.running.items() if k == key]
                log.exception("training failed for trials %s", numbers)
                del self.stacks[key]
                for entry in self.evict(key):
                    self.tell_failed(entry.trial, failure_reason(exc))
                continue
            reason = self.should_stop() if self.should_stop is not None else None
            if reason is not None:
                raise TrialInterrupted(reason)
            for report in reports:
                self.judge(key, stack, report)

    def judge(self, key: ShapeKey, stack: Population, report: SlotEpoch) -> None:
        """Tell Optuna the slot's epoch; complete, prune or fail its trial when it is over."""
        entry = self.running[(key, report.slot)]
        trial = entry.trial
        if report.diverged:
            reason = (
                f"diverged at epoch {report.epoch}: a fold's loss is NaN or infinite "
                "(try a smaller lr or a gradient clip)"
            )
            frozen = self.fail(trial, reason)
        elif not self.reported(trial, report):
            frozen = self.dropped(trial)
        elif trial.should_prune():
            frozen = self.finish(trial, TrialRecord(), state=TrialState.PRUNED)
        elif report.finished:
            result = stack.result(report.slot)
            record = TrialRecord.of_result(result, entry.config, "population")
            frozen = self.finish(trial, record, values=result.mean)
        else:
            return
        stack.release(report.slot)
        del self.running[(key, report.slot)]
        self.told(frozen)

    @staticmethod
    def reported(trial: optuna.Trial, report: SlotEpoch) -> bool:
        """Report the epoch's value; False if the trial was declared dead meanwhile."""
        try:
            with warnings.catch_warnings():  # a trial restarted after OOM reports again
                warnings.simplefilter("ignore", UserWarning)
                trial.report(report.value, report.epoch)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True

    def evict(self, key: ShapeKey) -> list[Running]:
        """Take every trial of ``key``'s stack out of its slot."""
        slots = [k for k in self.running if k[0] == key]
        return [self.running.pop(k) for k in slots]

    def out_of_memory(self, exc: torch.OutOfMemoryError, entries: list[Running]) -> None:
        """Halve the stack size and start ``entries`` again; at one slot, they fail."""
        if torch.device(self.device).type == "cuda":
            torch.cuda.empty_cache()
        if self.size == 1:
            for entry in entries:
                self.tell_failed(entry.trial, failure_reason(exc))
            return
        self.size = max(1, self.size // 2)
        self.ramp_done = False
        # Another stack of the old size is still in memory: rebuild it at the new size too.
        for key in [k for k, s in self.stacks.items() if self.size < s.P]:
            del self.stacks[key]
            entries.extend(self.evict(key))
        log.warning(
            "out of memory with %d trials in training; retrying them with P ≤ %d",
            len(entries) + len(self.running),
            self.size,
        )
        self.pending.extendleft(reversed(entries))

    def untold(self) -> Iterator[Running]:
        yield from list(self.running.values())
        yield from list(self.pending)
        self.running.clear()
        self.pending.clear()

    # --- telling -------------------------------------------------------------------------

    def fail(self, trial: optuna.Trial, reason: str) -> FrozenTrial:
        return self.finish(trial, TrialRecord(fail_reason=reason), state=TrialState.FAIL)

    def finish(self, trial: optuna.Trial, record: TrialRecord, **outcome: Any) -> FrozenTrial:
        """Record ``record`` and tell the outcome, unless a crash recovery failed the trial first.

        A long database outage can make a live trial look dead; its parameters were then
        queued again, so its result is dropped (with a warning) rather than raised.
        """
        if trial in self.live:
            self.live.remove(trial)
        try:
            record.write(trial)
            return self.study.tell(trial, **outcome)
        except optuna.exceptions.UpdateFinishedTrialError:
            return self.dropped(trial)

    def dropped(self, trial: optuna.Trial) -> FrozenTrial:
        """A trial declared dead while it trained (its worker was cut off from the database
        for longer than the grace): its parameters are queued again, so this run of it ends
        here, its result dropped with one line."""
        if trial in self.live:
            self.live.remove(trial)
        log.warning(
            "result of trial %d dropped: it was declared dead while it trained, and its "
            "parameters run again",
            trial.number,
        )
        return storage_of(self.study).get_trial(trial_id(trial))

    def tell_failed(self, trial: optuna.Trial, reason: str) -> None:
        self.told(self.fail(trial, reason))

    def told(self, frozen: FrozenTrial) -> None:
        for callback in self.callbacks:
            callback(self.study, frozen)
