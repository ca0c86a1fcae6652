"""The Optuna objective: sample a configuration, cross-validate it, record what happened."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
import torch

from trainer import rng
from trainer.data.datasets import Dataset
from trainer.data.splits import Split
from trainer.engines.per_trial import DivergedError, Schedule, cross_validate
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import DOMAINS, SEARCHABLE, Metric, Param, Range, StudySpec
from trainer.tuning.optuna_internals import trial_id
from trainer.tuning.records import TrialRecord


def hidden_key(widths: Sequence[int]) -> str:
    """Optuna's categorical choices must be scalars, so layer widths travel as '256-256'."""
    return "-".join(str(w) for w in widths)


def _draw(trial: optuna.Trial, name: str, entry: Param) -> Any:
    """One parameter: a range sampled, a list of choices picked from, a number as it is."""
    if isinstance(entry, Range):
        if name in DOMAINS and DOMAINS[name].integer:
            return trial.suggest_int(name, int(entry.low), int(entry.high), log=entry.log)
        return trial.suggest_float(name, entry.low, entry.high, log=entry.log)
    if isinstance(entry, list):
        return trial.suggest_categorical(name, entry)
    return entry


def searched(spec: StudySpec) -> dict[str, Param]:
    """Every parameter a trial of ``spec`` draws, by its Optuna name (``hidden`` apart):
    ``dropout.<group>`` per dropout group, ``dropout`` only if some dropout has no group."""
    space = spec.search_space
    entries = {name: getattr(space, name) for name in SEARCHABLE}
    if not spec.model.shares_dropout():
        del entries["dropout"]
    depth = max(len(h) for h in space.hidden or [spec.model.hidden])
    for group in spec.model.groups(depth):
        entries[f"dropout.{group}"] = space.group_dropout(group)
    return {name: entry for name, entry in entries.items() if entry is not None}


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Draw every searched parameter from ``trial``; fixed numbers pass through unsampled."""
    space = spec.search_space
    values = {name: _draw(trial, name, entry) for name, entry in searched(spec).items()}
    if space.hidden is not None:
        key = trial.suggest_categorical("hidden", [hidden_key(h) for h in space.hidden])
        values["hidden"] = [int(w) for w in key.split("-")]
    return values


def grid(spec: StudySpec, points: int) -> dict[str, list[Any]]:
    """The search space as a grid: ranges become ``points`` evenly (or log-) spaced values."""
    axes: dict[str, list[Any]] = {}
    for name, entry in searched(spec).items():
        if isinstance(entry, Range):
            spacing = np.geomspace if entry.log else np.linspace
            values = spacing(entry.low, entry.high, points)
            if name in DOMAINS and DOMAINS[name].integer:
                axes[name] = sorted({round(float(v)) for v in values})
            else:
                axes[name] = [float(v) for v in values]
        elif isinstance(entry, list):
            axes[name] = entry
    if spec.search_space.hidden is not None:
        axes["hidden"] = [hidden_key(h) for h in spec.search_space.hidden]
    return axes


def fold_schedule(spec: StudySpec) -> Schedule:
    """Folds one after another for the Wilcoxon pruner (it prunes between folds), else in
    lockstep (the median pruner compares epochs across all folds)."""
    return "sequential" if spec.pruner.between_folds else "lockstep"


def trial_seed(study_seed: int, trial_number: int) -> int:
    """The seed of a study's trial ``trial_number`` (its folds derive theirs from it)."""
    return rng.derived_seed(study_seed, trial_number)


class TrialInterrupted(Exception):
    """Raised inside a trial when its owner asked it to stop (cancel, shutdown).

    Its message is the owner's reason; ``trial_ids`` are the storage ids of the trials it
    interrupted: each is recorded as failed with that reason, and the owner may queue their
    parameters again.
    """

    def __init__(self, message: str, *, trial_ids: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.trial_ids = list(trial_ids)


class TrialFailed(Exception):
    """A trial's training raised: the trial fails with the reason and the study goes on."""


def failure_reason(exc: BaseException) -> str:
    """What a failed trial's ``fail_reason`` says about an exception (bounded in length)."""
    return f"{exc.__class__.__name__}: {exc}"[:500]


class Objective:
    """``objective(trial) -> CV mean`` for ``study.optimize`` or ask-and-tell.

    Lockstep folds report the fold-mean metric per epoch (for median/hyperband pruning and the
    dashboard's curves); with the Wilcoxon pruner folds run one after another and each fold's
    score is reported at step k, the paired instance that pruner compares against the best trial.
    ``should_stop`` is polled after every epoch; when it answers a reason the trial raises
    :class:`TrialInterrupted` (Optuna records it as failed, with that ``fail_reason``). Any
    other error of training fails the trial with ``fail_reason`` and raises
    :class:`TrialFailed` (catch it in
    ``study.optimize``), except the types in ``passthrough`` (a caller's database errors),
    which propagate unchanged.
    """

    def __init__(
        self,
        spec: StudySpec,
        dataset: Dataset,
        splits: Sequence[Split],
        *,
        metric: Metric,
        device: torch.device | str = "cpu",
        should_stop: Callable[[], str | None] | None = None,
        passthrough: tuple[type[BaseException], ...] = (),
        note: str | None = None,
    ) -> None:
        self.spec, self.dataset, self.splits = spec, dataset, splits
        self.metric, self.device = metric, device
        self.passthrough = passthrough
        self.schedule = fold_schedule(spec)
        self.should_stop = should_stop
        self.note = note  # why this study trains per trial (recorded on every trial)

    def __call__(self, trial: optuna.Trial) -> float:
        config = TrialConfig.from_values(self.spec, suggest(trial, self.spec))
        TrialRecord(config=config.hyperparameters()).write(trial)
        lockstep = self.schedule == "lockstep"

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} with value {value:.5g}")

        def on_epoch(epoch: int, value: float) -> None:
            reason = self.should_stop() if self.should_stop is not None else None
            if reason is not None:
                TrialRecord(fail_reason=reason).write(trial)
                raise TrialInterrupted(reason, trial_ids=[trial_id(trial)])
            if lockstep:
                report(epoch, value)

        try:
            result = cross_validate(
                self.dataset,
                config,
                self.splits,
                metric=self.metric,
                device=self.device,
                seed=trial_seed(self.spec.seed, trial.number),
                schedule=self.schedule,
                on_epoch=on_epoch,
                on_fold=None if lockstep else report,
            )
        except DivergedError as exc:
            TrialRecord(fail_reason=str(exc)).write(trial)
            raise
        except (TrialInterrupted, optuna.TrialPruned):
            raise
        except self.passthrough:
            raise
        except Exception as exc:
            TrialRecord(fail_reason=failure_reason(exc)).write(trial)
            raise TrialFailed(failure_reason(exc)) from exc
        TrialRecord.of_result(result, config, "per-trial", self.note).write(trial)
        return result.mean
