"""Batched asks: Optuna proposes P trials at once and the population engine trains them together.

TPE's constant liar (and the GP sampler's pending-trial handling) keeps the P proposals apart.
Every trial reports its fold-mean metric each epoch, so pruning and the dashboard's curves work
as with one trial at a time, and each trial is told as soon as its population is done.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from trainer.config import TrialConfig
from trainer.datasets import Dataset
from trainer.engine import DivergedError
from trainer.objective import (
    TrialInterrupted,
    failure_reason,
    result_attrs,
    suggest,
    trial_seed,
)
from trainer.population import train_population
from trainer.spec import Metric, StudySpec
from trainer.splits import Split

Callback = Callable[[optuna.Study, FrozenTrial], None]
log = logging.getLogger("regtune.trainer")


def reporter(
    trials: Sequence[optuna.Trial], should_stop: Callable[[], bool] | None = None
) -> Callable[[int, int, float], bool]:
    """Report a population's fold means to its trials; answer whether to prune each."""

    def on_epoch(slot: int, epoch: int, value: float) -> bool:
        if should_stop is not None and should_stop():
            raise TrialInterrupted(f"population interrupted at epoch {epoch}")
        trials[slot].report(value, epoch)
        return trials[slot].should_prune()

    return on_epoch


Guard = Callable[[Sequence[optuna.Trial]], AbstractContextManager[object]]


@dataclass
class Populations:
    """Runs a study's trials ``size`` at a time (grouped by shape: widths, batch, optimizer).

    A pruner can only prune against completed trials, so a first population of P would all
    run to the end. While fewer than ``size`` trials have completed, a population is only as
    large as the number completed (at least 1): sizes 1, 1, 2, 4, … until ``size``.

    ``guard(trials)`` wraps the training of each asked batch (a worker's heartbeats);
    ``should_stop`` is polled every epoch. An interruption fails the batch's untold trials
    (``fail_reason`` "interrupted") and re-raises :class:`TrialInterrupted` with them in
    ``failed``, so the caller can queue their parameters again.

    Errors of training never end the search: out of device memory, a population is split in
    halves and retried, and ``size`` shrinks for the batches after (a single trial that does
    not fit fails); any other error fails its group's trials with the reason. Exceptions of
    the ``passthrough`` types (a caller's database errors) propagate unchanged.
    """

    study: optuna.Study
    spec: StudySpec
    dataset: Dataset
    splits: Sequence[Split]
    metric: Metric
    size: int
    device: torch.device | str = "cpu"
    callbacks: Sequence[Callback] = ()
    guard: Guard | None = None
    should_stop: Callable[[], bool] | None = None
    passthrough: tuple[type[BaseException], ...] = ()

    def run(self, n_trials: int, timeout_s: float | None = None) -> None:
        start = time.monotonic()
        done = 0
        while done < n_trials and (timeout_s is None or time.monotonic() - start < timeout_s):
            batch = min(ramped(self.study, self.spec, self.size), n_trials - done)
            self.run_batch([self.study.ask() for _ in range(batch)])
            done += batch

    def run_batch(self, trials: list[optuna.Trial]) -> None:
        spec = self.spec
        configs = [TrialConfig.from_values(spec, suggest(t, spec.search_space)) for t in trials]
        groups: dict[tuple[object, ...], list[int]] = defaultdict(list)
        for i, (trial, config) in enumerate(zip(trials, configs, strict=True)):
            trial.set_user_attr("config", config.hyperparameters())
            groups[(config.hidden, config.batch_size, config.optimizer)].append(i)
        told: set[int] = set()
        try:
            with self.guard(trials) if self.guard is not None else nullcontext():
                for members in groups.values():
                    self.train_group(trials, configs, members, told)
        except TrialInterrupted as exc:
            failed = [
                self.fail(trial, "interrupted") for i, trial in enumerate(trials) if i not in told
            ]
            exc.failed = failed  # type: ignore[attr-defined]
            raise

    def train_group(
        self,
        trials: Sequence[optuna.Trial],
        configs: Sequence[TrialConfig],
        members: list[int],
        told: set[int],
    ) -> None:
        """Train one same-shape group of the asked trials and tell each its outcome."""
        try:
            outcomes = train_population(
                self.dataset,
                [configs[i] for i in members],
                self.splits,
                seeds=[trial_seed(self.spec.seed, trials[i].number) for i in members],
                metric=self.metric,
                device=self.device,
                on_epoch=reporter([trials[i] for i in members], self.should_stop),
            )
        except torch.OutOfMemoryError as exc:
            if len(members) == 1:
                self.tell_failed(trials[members[0]], failure_reason(exc), members[0], told)
                return
            if torch.device(self.device).type == "cuda":
                torch.cuda.empty_cache()
            half = len(members) // 2
            self.size = max(1, min(self.size, half))
            log.warning(
                "out of memory with %d trials; retrying as %d + %d and keeping P ≤ %d",
                len(members),
                half,
                len(members) - half,
                self.size,
            )
            self.train_group(trials, configs, members[:half], told)
            self.train_group(trials, configs, members[half:], told)
            return
        except (TrialInterrupted, *self.passthrough):
            raise
        except Exception as exc:
            log.exception("training failed for trials %s", [trials[i].number for i in members])
            for i in members:
                self.tell_failed(trials[i], failure_reason(exc), i, told)
            return
        for i, outcome in zip(members, outcomes, strict=True):
            trial = trials[i]
            if isinstance(outcome, DivergedError):
                self.tell_failed(trial, str(outcome), i, told)
                continue
            if outcome is None:
                frozen = self.finish(trial, {}, state=optuna.trial.TrialState.PRUNED)
            else:
                frozen = self.finish(trial, result_attrs(outcome, configs[i]), values=outcome.mean)
            self.told(frozen, i, told)

    def fail(self, trial: optuna.Trial, reason: str) -> FrozenTrial:
        return self.finish(trial, {"fail_reason": reason}, state=optuna.trial.TrialState.FAIL)

    def finish(self, trial: optuna.Trial, attrs: dict[str, Any], **outcome: Any) -> FrozenTrial:
        """Record ``attrs`` and tell the outcome, unless a crash recovery failed the trial first.

        A long database outage can make a live trial look dead; its parameters were then
        queued again, so its result is dropped (with a warning) rather than raised.
        """
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            return self.study.tell(trial, **outcome)
        except optuna.exceptions.UpdateFinishedTrialError as exc:
            log.warning("result of trial %d dropped: %s", trial.number, exc)
            return self.study._storage.get_trial(trial._trial_id)

    def tell_failed(self, trial: optuna.Trial, reason: str, slot: int, told: set[int]) -> None:
        self.told(self.fail(trial, reason), slot, told)

    def told(self, frozen: FrozenTrial, slot: int, told: set[int]) -> None:
        told.add(slot)
        for callback in self.callbacks:
            callback(self.study, frozen)


def ramped(study: optuna.Study, spec: StudySpec, size: int) -> int:
    """The population size now: ``size``, or the number of completed trials while that is less."""
    if spec.pruner.kind == "none" or size == 1:
        return size
    # Optuna's percentile/median pruners compare against COMPLETE trials only.
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(1, min(size, len(completed)))
