"""The population engine of a search: P trial slots that train as stacks, refilled as trials end.

A worker keeps P slots of K folds training as one stack
(:class:`trainer.engines.population.Population`, one per shape when widths, batch size or
optimizer are searched). After every epoch each trial that trained is told its fold-mean value
(:func:`trainer.tuning.trade_off.report`); a trial that completes, is pruned or fails is told
to Optuna at once and its slot takes the next asked trial at the next epoch boundary. The
pruner therefore sees results as soon as they exist, and a pruned trial costs only its own
epochs.

A pruner can only prune against completed trials, so while fewer than P trials have
completed the number training at once is the number completed (at least 1): 1, 1, 2, 3, …
until P (:func:`trials_at_once`).

Errors of training never end the search: out of device memory, the stack is rebuilt with
half the slots (its trials start again from scratch, which gives the same results since a
trial does not depend on its slot); a single trial that does not fit fails. Any other error
fails the trials of its stack with the reason. Exceptions of the ``passthrough`` types (a
caller's database errors) propagate unchanged.
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from trainer.device import release_memory
from trainer.engines import compiled
from trainer.engines.population import Population, ShapeKey, SlotEpoch, shape_key
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import StudySpec
from trainer.tuning.ask_tell import AskAndTell
from trainer.tuning.records import TrialRecord
from trainer.tuning.space import suggest, trial_seed
from trainer.tuning.trade_off import report as report_metric
from trainer.tuning.trade_off import should_prune, told
from trainer.tuning.trial_errors import TrialInterrupted, failure_reason
from trainer.tuning.trial_training import TrialTraining

log = logging.getLogger("regtune.trainer")

# Builds a stack: the seam where tests put a population that fails on purpose.
StackBuilder = Callable[..., Population]
Slot = tuple[ShapeKey, int]  # a stack's shape and the slot's index in it


def trials_at_once(study: optuna.Study, spec: StudySpec, size: int) -> int:
    """How many trials may train at once: ``size``, or the number of completed trials while
    that is less (at least 1) and a pruner compares against them."""
    if spec.pruner.kind == "none" or size == 1:
        return size
    # Optuna's percentile/median pruners compare against COMPLETE trials only.
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(1, min(size, len(completed)))


@dataclass
class Running:
    """A trial asked from Optuna and the configuration it trains."""

    trial: optuna.Trial
    config: TrialConfig


@dataclass
class PopulationEngine:
    """``size`` (P) slots per stack for ``training``'s trials.

    ``build_stack`` builds a stack; ``compile`` puts its step under ``torch.compile`` (None:
    on a GPU only). The engine's state: its stacks by shape, the trials in their slots, the
    trials waiting for one (to start again after an out-of-memory), and whether the ramp of
    :func:`trials_at_once` has reached ``size`` (after an out-of-memory it ramps again).
    """

    training: TrialTraining
    size: int
    build_stack: StackBuilder = Population
    compile: bool | None = None
    stacks: dict[ShapeKey, Population] = field(default_factory=dict, init=False)
    running: dict[Slot, Running] = field(default_factory=dict, init=False)
    waiting: deque[Running] = field(default_factory=deque, init=False)
    ramped_up: bool = field(default=False, init=False)

    def room(self, study: optuna.Study) -> int:
        """How many trials may train at once now (the pruner's warm-up, then ``size``)."""
        if self.ramped_up:
            return self.size
        now = trials_at_once(study, self.training.spec, self.size)
        self.ramped_up = now >= self.size
        return now

    def start_trials(self, trials: AskAndTell) -> bool:
        """Give free slots to waiting trials, then to newly asked ones; True if any started.

        A trial that fails before it starts (its values cannot be drawn, its stack cannot be
        built) frees its slot for the next one asked: the search ends when the budget does, not
        because one round of asking failed (each failure spends a trial of the budget)."""
        started = False
        while self.waiting and len(self.running) < self.room(trials.study):
            started |= self.place(trials, self.waiting.popleft())
        spec = self.training.spec
        while len(self.running) + len(self.waiting) < self.room(trials.study):
            trial = trials.ask()
            if trial is None:
                break
            try:
                config = TrialConfig.from_values(spec, suggest(trial, spec))
                TrialRecord(config=config.hyperparameters()).write(trial)
            except self.training.passthrough:
                raise
            except Exception as exc:  # e.g. a sampler that cannot draw: the trial fails
                self.fail(trials, trial, failure_reason(exc))
                continue
            started |= self.place(trials, Running(trial, config))
        return started

    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    def place(self, trials: AskAndTell, entry: Running) -> bool:
        """Put ``entry`` in a free slot of its shape's stack (built on first use)."""
        training = self.training
        key = shape_key(entry.config)
        try:
            stack = self.stacks.get(key)
            if stack is None:
                stack = self.stacks[key] = self.build_stack(
                    training.dataset,
                    training.protocol.splits,
                    entry.config,
                    slots=self.size,
                    metric=training.protocol.metric,
                    device=training.device,
                    precision=training.spec.training.precision,
                    compile=compiled.wanted(torch.device(training.device), self.compile),
                )
            slot = stack.free_slots()[0]
            stack.assign(slot, entry.config, trial_seed(training.spec.seed, entry.trial.number))
        except torch.OutOfMemoryError as exc:
            self.stacks.pop(key, None)
            stack = None  # its memory is released in retry_smaller
            self.retry_smaller(trials, exc, [entry])
            return False
        except training.passthrough:
            raise
        except Exception as exc:
            log.exception("trial %d could not start", entry.trial.number)
            self.fail(trials, entry.trial, failure_reason(exc))
            return False
        self.running[(key, slot)] = entry
        return True

    def train(self, trials: AskAndTell) -> None:
        """One epoch of every stack, then each trial that trained is told how it stands."""
        for key in list(self.stacks):  # keys: a list of the stacks would keep a dropped one
            stack = self.stacks[key]
            if stack.occupied() == 0:
                del self.stacks[key]
                continue
            try:
                stack.train_epoch()
                reports = stack.end_epoch()
            except torch.OutOfMemoryError as exc:
                del self.stacks[key]
                del stack  # the last reference here: retry_smaller releases its memory
                self.retry_smaller(trials, exc, self.evict(key))
                continue
            except TrialInterrupted:
                raise
            except self.training.passthrough:
                raise
            except Exception as exc:
                numbers = [r.trial.number for (k, _), r in self.running.items() if k == key]
                log.exception("training failed for trials %s", numbers)
                del self.stacks[key]
                for entry in self.evict(key):
                    self.fail(trials, entry.trial, failure_reason(exc))
                continue
            reason = self.training.stop_reason()
            if reason is not None:
                raise TrialInterrupted(reason)
            for report in reports:
                self.tell_epoch(trials, key, stack, report)

    def tell_epoch(
        self, trials: AskAndTell, key: ShapeKey, stack: Population, report: SlotEpoch
    ) -> None:
        """Report the slot's epoch to Optuna; complete, prune or fail its trial when it is over
        (and free its slot)."""
        entry = self.running[(key, report.slot)]
        trial = entry.trial
        frozen: FrozenTrial
        if report.diverged:
            reason = (
                f"diverged at epoch {report.epoch}: a fold's loss is NaN or infinite "
                "(try a smaller lr or a gradient clip)"
            )
            frozen = trials.fail(trial, reason)
        elif not self.reported(trial, report):
            frozen = trials.drop_result(trial)
        elif should_prune(trial):
            frozen = trials.tell(trial, TrialRecord(), state=TrialState.PRUNED)
        elif report.finished:
            result = stack.result(report.slot)
            record = TrialRecord.of_result(result, entry.config, "population")
            frozen = trials.tell(trial, record, value=told(self.training.spec, record))
        else:
            return
        stack.release(report.slot)
        del self.running[(key, report.slot)]
        trials.notify(frozen)

    @staticmethod
    def reported(trial: optuna.Trial, report: SlotEpoch) -> bool:
        """Report the epoch's value; False if the trial was declared dead meanwhile."""
        try:
            with warnings.catch_warnings():  # a trial restarted after OOM reports again
                warnings.simplefilter("ignore", UserWarning)
                report_metric(trial, report.epoch, report.value)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True

    def evict(self, key: ShapeKey) -> list[Running]:
        """Take every trial of ``key``'s stack out of its slot."""
        slots = [k for k in self.running if k[0] == key]
        return [self.running.pop(k) for k in slots]

    def retry_smaller(
        self, trials: AskAndTell, exc: torch.OutOfMemoryError, entries: list[Running]
    ) -> None:
        """Out of memory: halve the stack size and start ``entries`` again; at one slot, they
        fail."""
        if self.size == 1:
            release_memory(torch.device(self.training.device), exc)
            for entry in entries:
                self.fail(trials, entry.trial, failure_reason(exc))
            return
        self.size = max(1, self.size // 2)
        self.ramped_up = False
        # Another stack of the old size is still in memory: rebuild it at the new size too.
        for key in [k for k, s in self.stacks.items() if self.size < s.P]:
            del self.stacks[key]
            entries.extend(self.evict(key))
        # Only now is every dropped stack unreferenced, so its memory can go back.
        release_memory(torch.device(self.training.device), exc)
        log.warning(
            "out of memory with %d trials in training; retrying them with P ≤ %d",
            len(entries) + len(self.running),
            self.size,
        )
        self.waiting.extendleft(reversed(entries))

    def fail(self, trials: AskAndTell, trial: optuna.Trial, reason: str) -> None:
        """Tell ``trial`` failed with ``reason`` and show it to the callbacks."""
        trials.notify(trials.fail(trial, reason))

    def take_unfinished(self) -> list[optuna.Trial]:
        unfinished = [entry.trial for entry in [*self.running.values(), *self.waiting]]
        self.running.clear()
        self.waiting.clear()
        return unfinished
