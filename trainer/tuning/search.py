"""The search driver: one loop that asks Optuna for trials, has an engine train them and tells
the results.

``regtune tune`` (:func:`trainer.tuning.study.run_study`) and the service's workers both run a
study through :class:`Search`; they differ only in what they pass: the budget (a
:class:`trainer.tuning.budget.Budget` that reserves each fresh trial atomically, so the study holds
exactly ``n_trials``), when to stop, and a guard that beats for running trials.

The engine (:func:`choose_engine`) is the population engine
(:class:`trainer.tuning.population_search.PopulationEngine`: P slots trained as stacks, an epoch
per step), or, for studies with Wilcoxon pruning, which decides between folds, and networks that
do not stack, the per-trial engine (:class:`trainer.tuning.per_trial_search.PerTrialEngine`: one
trial per step), by the same ask-and-tell (:class:`trainer.tuning.ask_tell.AskAndTell`). The loop:
while the engine starts trials or has trials training, it trains one step. When the caller asks
the trials to stop, every trial the engine holds is failed with the caller's reason and the
search raises :class:`~trainer.tuning.trial_errors.TrialInterrupted` with their ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import optuna
import torch

from trainer.engines import compiled, layout
from trainer.engines.population import Population
from trainer.tuning.ask_tell import AskAndTell, Callback
from trainer.tuning.budget import Budget
from trainer.tuning.objective import Objective
from trainer.tuning.optuna_internals import trial_id
from trainer.tuning.per_trial_search import PerTrialEngine
from trainer.tuning.population_search import PopulationEngine, StackBuilder
from trainer.tuning.trial_errors import TrialInterrupted
from trainer.tuning.trial_training import TrialTraining

# Wraps the whole search; gets the live list of running trials (a worker beats for them).
Guard = Callable[[Sequence[optuna.Trial]], AbstractContextManager[object]]


class Engine(Protocol):
    """What trains a search's trials; each engine holds the trials it started until it tells
    them."""

    def start_trials(self, trials: AskAndTell) -> bool:
        """Ask ``trials`` for as many trials as there is room for and start them; True if any
        started."""
        ...

    def busy(self) -> bool:
        """Whether a started trial is still training or waiting to."""
        ...

    def train(self, trials: AskAndTell) -> None:
        """Train one step (an epoch of every stack, or a whole trial) and tell ``trials`` the
        outcome of each trial that ended."""
        ...

    def take_unfinished(self) -> list[optuna.Trial]:
        """Take out every started trial that was not told (the search is interrupted)."""
        ...


def choose_engine(
    training: TrialTraining,
    *,
    population: int | None = None,
    compile: bool | None = None,
    build_stack: StackBuilder = Population,
) -> Engine:
    """The engine for ``training``'s trials: the population engine with ``population`` slots
    per stack (by default as many as suit the device:
    :func:`trainer.engines.layout.population_size`), its step under ``torch.compile`` if
    ``compile`` (None: on a GPU only); the per-trial engine where stacking does not apply
    (:func:`trainer.engines.layout.per_trial_reason`, recorded on every trial)."""
    reason = layout.per_trial_reason(training.spec, training.dataset)
    if reason is not None:
        return PerTrialEngine(Objective(training, note=reason))
    device = torch.device(training.device)
    size = layout.population_size(
        training.spec,
        training.dataset,
        device,
        population,
        compiled=compiled.wanted(device, compile),
    )
    return PopulationEngine(training, size, build_stack=build_stack, compile=compile)


@dataclass(frozen=True)
class Search:
    """Run ``study``'s trials with ``engine`` until ``budget`` grants none and none is running.

    ``budget`` is asked only when the engine has room: queued re-runs start while it is
    ``open()``, a fresh trial only once it ``reserve()``s one; ``deadline`` (epoch seconds)
    stops new trials, not running ones; ``callbacks`` see each trial as it is told; ``guard``
    wraps the whole search and gets the live list of running trials.
    """

    study: optuna.Study
    engine: Engine
    budget: Budget
    deadline: float | None = None
    callbacks: Sequence[Callback] = ()
    guard: Guard | None = None

    def run(self) -> None:
        trials = AskAndTell(self.study, self.budget, self.deadline, self.callbacks)
        with self.guard(trials.live) if self.guard is not None else nullcontext():
            try:
                while self.engine.start_trials(trials) or self.engine.busy():
                    self.engine.train(trials)
            except TrialInterrupted as exc:
                reason = str(exc)
                unfinished = self.engine.take_unfinished()
                ids = [trial_id(trials.fail(trial, reason)) for trial in unfinished]
                raise TrialInterrupted(reason, trial_ids=ids) from exc
