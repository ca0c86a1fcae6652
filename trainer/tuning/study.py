"""Running a study: sampler and pruner from the spec, the search, then the honest test score.

After the search the best configuration is retrained on every non-test row and scored once
on the held-out test split that no trial has seen; the CV mean ± std and the test score
are reported side by side.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch

from trainer.data.datasets import Dataset, check_for_cv
from trainer.data.splits import Split, cv_splits, holdout
from trainer.engines import layout
from trainer.engines.per_trial import DivergedError, FittedModel, fold_ensemble
from trainer.engines.population import Population
from trainer.engines.trial_config import TrialConfig
from trainer.model_file import artifact
from trainer.nets.networks import footprint
from trainer.specs.study_spec import Metric, SpecError, StudySpec, default_metric, metric_direction
from trainer.tuning.budget import Budget, SharedCounter, spent
from trainer.tuning.objective import fold_schedule, grid, trial_seed
from trainer.tuning.records import BestTrial, SplitRows, StudyResult, TrialRecord
from trainer.tuning.refit import refit
from trainer.tuning.search import Engine, Search


def resolve_metric(spec: StudySpec, dataset: Dataset) -> Metric:
    """The objective metric, checked against the dataset's task."""
    if spec.task is not None and spec.task != dataset.task:
        raise SpecError(f"task is {spec.task!r} but dataset {dataset.name!r} is {dataset.task}")
    metric = spec.objective.metric or default_metric(dataset.task)
    if metric == "accuracy" and dataset.task == "regression":
        raise SpecError("objective.metric 'accuracy' needs a classification dataset")
    if metric == "mse" and dataset.task == "classification":
        raise SpecError("objective.metric 'mse' needs a regression dataset")
    return metric


def network_sizes(spec: StudySpec, dataset: Dataset) -> list[tuple[str, list[int] | None, int]]:
    """Every network the search may build, checked against the data's shape (a
    :class:`~trainer.nets.layers.LayerError` names the layer that does not fit): per choice
    of ``search_space.hidden`` (or the model alone), its field, widths and parameter count."""
    choices: list[tuple[str, list[int] | None]] = [("model", None)]
    if spec.search_space.hidden is not None:
        choices = [("search_space.hidden", widths) for widths in spec.search_space.hidden]
    return [
        (
            field,
            widths,
            footprint(spec.model, dataset.input_shape, dataset.n_outputs, hidden=widths).parameters,
        )
        for field, widths in choices
    ]


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    s = spec.sampler
    if s.kind == "tpe":
        # constant_liar keeps concurrent workers from proposing the same point.
        return optuna.samplers.TPESampler(
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
    return optuna.samplers.GridSampler(grid(spec, s.grid_points), seed=spec.seed)


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


@dataclass(frozen=True)
class Protocol:
    """The fixed data protocol of a study: metric, held-out test rows and CV folds."""

    metric: Metric
    pool: np.ndarray
    test: np.ndarray
    splits: list[Split]

    @classmethod
    def of(cls, spec: StudySpec, dataset: Dataset, *, check_network: bool = True) -> Protocol:
        """The protocol of ``spec`` on ``dataset``; ``check_network`` checks the network
        against the data first (a worker does not: the API host did at submission, and a
        plugin missing on the worker fails its trials, with the reason, not the study)."""
        metric = resolve_metric(spec, dataset)
        if check_network:
            network_sizes(spec, dataset)
        cv = spec.cv
        check_for_cv(dataset, cv.folds, cv.test_fraction)
        pool, test = holdout(dataset.y, dataset.task, cv.test_fraction, spec.seed)
        splits = cv_splits(
            dataset.y,
            dataset.task,
            pool,
            folds=cv.folds,
            shuffle=cv.shuffle,
            inner_validation=cv.inner_validation,
            seed=spec.seed,
        )
        return cls(metric, pool, test, splits)


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
        direction=metric_direction(metric),
        load_if_exists=True,
    )


@dataclass
class StudyOutcome:
    """A searched study: its best trial, that trial refitted (``fitted``) and packed as a model
    file (``model``, :mod:`trainer.model_file`; None without a refit), and the protocol's
    rows."""

    study: optuna.Study
    metric: Metric
    best: optuna.trial.FrozenTrial | None
    fitted: FittedModel | None
    splits: SplitRows
    model: dict[str, Any] | None = None

    @property
    def test_score(self) -> float | None:
        return self.fitted.test_score if self.fitted else None

    def summary(self) -> StudyResult:
        """The study's outcome (``regtune tune``; ``--json`` prints it)."""
        states = Counter(t.state.name.lower() for t in self.study.get_trials(deepcopy=False))
        return StudyResult(
            study=self.study.study_name,
            metric=self.metric,
            direction=metric_direction(self.metric),
            trials=dict(states),
            best=None if self.best is None else BestTrial.of(self.best),
            test_score=self.test_score,
        )


def run_study(
    spec: StudySpec,
    dataset: Dataset,
    *,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    device: torch.device | str = "cpu",
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    refit_best: bool = True,
    population: int | None = None,
    engine: Engine = Population,
    sampler_seed: int | None = None,
    compile: bool | None = None,
    budget: Budget | None = None,
) -> StudyOutcome:
    """Search until the study holds ``spec.n_trials`` finished trials (or ``timeout_s``).

    ``budget`` reserves each fresh trial (:mod:`trainer.tuning.budget`); processes that search one
    study share one. By default this process alone counts what the storage already holds.

    Diverging trials fail with their reason in ``fail_reason`` and the search goes on.
    ``population`` trials train at once as one stacked model (MLPs and CNNs; by default as
    many as suit the device: :func:`trainer.engines.layout.population_size`); studies with Wilcoxon
    pruning, which decides between folds, train one trial at a time. ``engine`` builds the
    stacks (:class:`trainer.tuning.search.Search`; tests pass one that fails on purpose);
    ``compile`` puts their step under ``torch.compile`` (default: on a GPU only).
    """
    protocol = Protocol.of(spec, dataset)
    study = create_study(
        spec, protocol.metric, storage=storage, study_name=study_name, sampler_seed=sampler_seed
    )
    Search(
        study,
        spec,
        dataset,
        protocol.splits,
        metric=protocol.metric,
        size=layout.population_size(spec, dataset, torch.device(device), population),
        budget=budget or SharedCounter.starting_at(spec.n_trials, spent(study)),
        device=device,
        deadline=None if spec.timeout_s is None else time.time() + spec.timeout_s,
        callbacks=callbacks,
        engine=engine,
        compile=compile,
    ).run()
    return conclude(study, spec, dataset, protocol, refit_best=refit_best, device=device)


def conclude(
    study: optuna.Study,
    spec: StudySpec,
    dataset: Dataset,
    protocol: Protocol,
    *,
    refit_best: bool = True,
    device: torch.device | str = "cpu",
) -> StudyOutcome:
    """The searched study's outcome: its best trial, and if ``refit_best`` that trial retrained,
    tested and packed as a model file by :func:`final_model`, as a served study's is."""
    splits = SplitRows.of(protocol.test, protocol.splits)
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        return StudyOutcome(study, protocol.metric, None, None, splits)
    best = study.best_trial
    if not refit_best:
        return StudyOutcome(study, protocol.metric, best, None, splits)
    fitted, model = final_model(
        spec,
        dataset,
        protocol,
        best,
        device=device,
        study={"name": study.study_name, "dataset": spec.dataset},
    )
    if fitted.test_score is not None:
        study.set_user_attr("test_score", fitted.test_score)
    return StudyOutcome(study, protocol.metric, best, fitted, splits, model)


def refit_epochs(best_epochs: Sequence[int]) -> int:
    """How long the refit trains: the median over folds of the best epoch, as a count.

    ``best_epochs`` are 0-based (a fold whose best weights came after its first epoch says
    0), so the count is the median + 1; the median of an even number of folds is rounded
    (half to even). The median, not the mean: one fold that stopped late does not drag the
    refit along.
    """
    return max(1, round(float(np.median(best_epochs))) + 1)


def refit_trial(
    spec: StudySpec,
    dataset: Dataset,
    protocol: Protocol,
    trial: optuna.trial.FrozenTrial,
    *,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> FittedModel:
    """Retrain ``trial``'s configuration on all non-test rows and score it on the test rows.

    It trains for :func:`refit_epochs` epochs (the median over folds of the best epoch), with
    the trial's own seed unless ``seed`` is given (to see how much the test score varies
    between refits).
    """
    record = TrialRecord.of(trial)
    assert record.config is not None and record.best_epochs is not None, "a completed trial"
    config = TrialConfig.from_values(spec, record.config)
    epochs = refit_epochs(record.best_epochs)
    return refit(
        dataset,
        config,
        protocol.pool,
        protocol.test,
        metric=protocol.metric,
        epochs=epochs,
        device=device,
        seed=trial_seed(spec.seed, trial.number) if seed is None else seed,
    )


def final_model(
    spec: StudySpec,
    dataset: Dataset,
    protocol: Protocol,
    trial: optuna.trial.FrozenTrial,
    *,
    device: torch.device | str = "cpu",
    study: dict[str, Any] | None = None,
) -> tuple[FittedModel, dict[str, Any]]:
    """:func:`refit_trial`, and the refitted model packed as a file (:mod:`trainer.model_file`)
    with the trial's CV scores, its test score and ``study`` metadata; with
    ``spec.final_model.ensemble`` the file also holds the trial's K fold models. A fold
    that diverges when retrained costs the ensemble, not the model: the file then says why
    in ``ensemble_error``."""
    fitted = refit_trial(spec, dataset, protocol, trial, device=device)
    ensemble, ensemble_error = None, None
    if spec.final_model.ensemble:
        try:
            ensemble = fold_ensemble(
                dataset,
                fitted.config,
                protocol.splits,
                protocol.test,
                metric=protocol.metric,
                device=device,
                seed=trial_seed(spec.seed, trial.number),
                schedule=fold_schedule(spec),
            )
        except DivergedError as exc:
            ensemble_error = f"the fold ensemble could not be built: {exc}"
    record = TrialRecord.of(trial)
    packed = artifact.pack(
        fitted,
        dataset,
        metric=protocol.metric,
        n_train=len(protocol.pool),
        n_test=len(protocol.test),
        cv={"cv_mean": record.cv_mean, "cv_std": record.cv_std, "fold_scores": record.fold_scores},
        trial={
            "number": trial.number,
            "params": trial.params,
            "best_epochs": record.best_epochs,
            "diagnosis": record.diagnosis,
        },
        study=study,
        ensemble=ensemble,
        ensemble_error=ensemble_error,
    )
    return fitted, packed
