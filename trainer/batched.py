"""Batched asks: Optuna proposes P trials at once and the population engine trains them together.

TPE's constant liar (and the GP sampler's pending-trial handling) keeps the P proposals apart.
Every trial reports its fold-mean metric each epoch, so pruning and the dashboard's curves work
as with one trial at a time, and each trial is told as soon as its population is done.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import optuna
import torch

from trainer.config import TrialConfig
from trainer.datasets import Dataset
from trainer.engine import DivergedError
from trainer.objective import TrialInterrupted, result_attrs, suggest, trial_seed
from trainer.population import train_population
from trainer.spec import Metric, StudySpec
from trainer.splits import Split

Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


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


def optimize_in_populations(
    study: optuna.Study,
    spec: StudySpec,
    dataset: Dataset,
    splits: Sequence[Split],
    *,
    metric: Metric,
    size: int,
    n_trials: int,
    timeout_s: float | None = None,
    device: torch.device | str = "cpu",
    callbacks: Sequence[Callback] = (),
    guard: Callable[[Sequence[optuna.Trial]], AbstractContextManager[object]] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Run ``n_trials`` trials, ``size`` at a time (grouped by shape: widths, batch, optimizer).

    A pruner can only prune against completed trials, so a first population of P would all
    run to the end. While fewer than ``size`` trials have completed, a population is only as
    large as the number completed (at least 1): sizes 1, 1, 2, 4, … until ``size``.

    ``guard(trials)`` wraps the training of each asked batch (a worker's heartbeats);
    ``should_stop`` is polled every epoch. An interruption fails the batch's untold trials
    (``fail_reason`` "interrupted") and re-raises :class:`TrialInterrupted` with them in
    ``failed``, so the caller can queue their parameters again.
    """
    start = time.monotonic()
    done = 0
    while done < n_trials and (timeout_s is None or time.monotonic() - start < timeout_s):
        trials = [study.ask() for _ in range(min(ramped(study, spec, size), n_trials - done))]
        configs = [TrialConfig.from_values(spec, suggest(t, spec.search_space)) for t in trials]
        groups: dict[tuple[object, ...], list[int]] = defaultdict(list)
        for i, (trial, config) in enumerate(zip(trials, configs, strict=True)):
            trial.set_user_attr("config", config.hyperparameters())
            groups[(config.hidden, config.batch_size, config.optimizer)].append(i)
        told: set[int] = set()
        try:
            with guard(trials) if guard is not None else nullcontext():
                for members in groups.values():
                    train_group(
                        study,
                        spec,
                        dataset,
                        splits,
                        trials,
                        configs,
                        members,
                        metric=metric,
                        device=device,
                        callbacks=callbacks,
                        should_stop=should_stop,
                        told=told,
                    )
        except TrialInterrupted as exc:
            failed = []
            for i, trial in enumerate(trials):
                if i not in told:
                    trial.set_user_attr("fail_reason", "interrupted")
                    failed.append(study.tell(trial, state=optuna.trial.TrialState.FAIL))
            exc.failed = failed  # type: ignore[attr-defined]
            raise
        done += len(trials)


def ramped(study: optuna.Study, spec: StudySpec, size: int) -> int:
    """The population size now: ``size``, or the number of completed trials while that is less."""
    if spec.pruner.kind == "none" or size == 1:
        return size
    # Optuna's percentile/median pruners compare against COMPLETE trials only.
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(1, min(size, len(completed)))


def train_group(
    study: optuna.Study,
    spec: StudySpec,
    dataset: Dataset,
    splits: Sequence[Split],
    trials: Sequence[optuna.Trial],
    configs: Sequence[TrialConfig],
    members: list[int],
    *,
    metric: Metric,
    device: torch.device | str,
    callbacks: Sequence[Callback],
    should_stop: Callable[[], bool] | None,
    told: set[int],
) -> None:
    """Train one same-shape group of the asked trials and tell each its outcome."""
    outcomes = train_population(
        dataset,
        [configs[i] for i in members],
        splits,
        seeds=[trial_seed(spec.seed, trials[i].number) for i in members],
        metric=metric,
        device=device,
        on_epoch=reporter([trials[i] for i in members], should_stop),
    )
    for i, outcome in zip(members, outcomes, strict=True):
        trial = trials[i]
        if outcome is None:
            frozen = study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif isinstance(outcome, DivergedError):
            trial.set_user_attr("fail_reason", str(outcome))
            frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            for key, value in result_attrs(outcome, configs[i]).items():
                trial.set_user_attr(key, value)
            frozen = study.tell(trial, outcome.mean)
        told.add(i)
        for callback in callbacks:
            callback(study, frozen)
