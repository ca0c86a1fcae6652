"""A spec's Optuna study: the sampler that proposes trials, the pruner that stops them early,
the direction of the metric (and of the size, a trade-off's second objective:
:mod:`trainer.tuning.trade_off`), and the study created (or opened, to resume) with them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from trainer.specs.study_spec import Metric, StudySpec
from trainer.tuning.optuna_internals import metric_directed
from trainer.tuning.space import grid
from trainer.tuning.trade_off import study_directions


class TradeOffTPESampler(optuna.samplers.TPESampler):
    """TPE for a trade-off study, whose pruned trials carry the metric's learning curve: it
    ranks them by the metric (:func:`trainer.tuning.optuna_internals.metric_directed`)."""

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return super().sample_relative(metric_directed(study), trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        directed = metric_directed(study)
        return super().sample_independent(directed, trial, param_name, param_distribution)


class Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its stop: it calls ``study.stop()`` once the grid is
    walked, which raises outside ``study.optimize`` (regtune asks and tells trials itself), and
    so failed the last trial of every grid study. The search ends by its budget instead, which
    :func:`~trainer.tuning.space.check_grid` keeps within the grid."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    s = spec.sampler
    if s.kind == "tpe":
        tpe = optuna.samplers.TPESampler if spec.objective.trade_off is None else TradeOffTPESampler
        # constant_liar keeps concurrent workers from proposing the same point.
        return tpe(
            seed=spec.seed,
            n_startup_trials=s.n_startup_trials,
            multivariate=True,
            constant_liar=True,
        )
    if s.kind == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if s.kind == "gp":
        return optuna.samplers.GPSampler(seed=spec.seed, n_startup_trials=s.n_startup_trials)
    if s.kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=spec.seed, n_startup_trials=s.n_startup_trials)
    if s.kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=spec.seed, population_size=s.population_size)
    return Grid(grid(spec, s.grid_points), seed=spec.seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p.kind == "median":
        # A fixed warm-up would judge long runs (thousands of epochs) on their first few.
        warmup = p.n_warmup_steps
        if warmup is None:
            warmup = max(5, spec.training.max_epochs // 10)
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=warmup
        )
    if p.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1,
            max_resource=spec.training.max_epochs,
            reduction_factor=p.reduction_factor,
        )
    if p.kind == "wilcoxon":
        with warnings.catch_warnings():  # experimental in Optuna, and we mean to use it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=p.p_threshold)
    return optuna.pruners.NopPruner()


def create_study(
    spec: StudySpec,
    metric: Metric,
    *,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    sampler_seed: int | None = None,
) -> optuna.Study:
    """A new Optuna study for ``spec``, or the existing one of that name (to resume).

    ``sampler_seed`` replaces the spec's seed in the sampler only: processes searching one
    study each need their own random stream, or they would propose alike."""
    sampling = spec if sampler_seed is None else spec.model_copy(update={"seed": sampler_seed})
    return optuna.create_study(
        storage=storage,
        study_name=study_name or spec.name,
        sampler=make_sampler(sampling),
        pruner=make_pruner(spec),
        directions=study_directions(metric, spec.objective.trade_off),
        load_if_exists=True,
    )
