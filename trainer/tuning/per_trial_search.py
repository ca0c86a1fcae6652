"""The per-trial engine of a search: one trial at a time, each trained to its end by the
:class:`~trainer.tuning.objective.Objective` and told at once.

For the studies the population engine cannot serve
(:func:`trainer.engines.layout.per_trial_reason`): Wilcoxon pruning, which decides between
folds, and networks that do not stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from trainer.engines.results import DivergedError
from trainer.tuning.ask_tell import AskAndTell
from trainer.tuning.objective import Objective
from trainer.tuning.records import TrialRecord
from trainer.tuning.trial_errors import TrialFailed


@dataclass
class PerTrialEngine:
    """Trains ``objective``'s trials one by one; ``current`` is the trial it trains, if any.

    The objective records why a trial failed before it raises, so a failed trial is told
    with nothing more to record. A :class:`~trainer.tuning.trial_errors.TrialInterrupted`
    leaves ``current`` to the search, which fails it with the reason.
    """

    objective: Objective
    current: optuna.Trial | None = field(default=None, init=False)

    def start_trials(self, trials: AskAndTell) -> bool:
        if self.current is None:
            self.current = trials.ask()
        return self.current is not None

    def busy(self) -> bool:
        return self.current is not None

    def train(self, trials: AskAndTell) -> None:
        """Train the current trial to its end and tell its outcome."""
        assert self.current is not None, "a trial was started"
        frozen = self.outcome(trials, self.current)
        self.current = None
        trials.notify(frozen)

    def outcome(self, trials: AskAndTell, trial: optuna.Trial) -> FrozenTrial:
        try:
            value = self.objective(trial)
        except optuna.TrialPruned:
            return trials.tell(trial, TrialRecord(), state=TrialState.PRUNED)
        except (DivergedError, TrialFailed):
            return trials.tell(trial, TrialRecord(), state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return trials.drop_result(trial)
        return trials.tell(trial, TrialRecord(), value=value)

    def take_unfinished(self) -> list[optuna.Trial]:
        unfinished = [] if self.current is None else [self.current]
        self.current = None
        return unfinished
