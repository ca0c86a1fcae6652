"""Running a study from its spec: the search, then the honest test score.

:func:`run_study` fixes the study's CV protocol (:mod:`trainer.tuning.cv_protocol`), creates
or resumes its Optuna study (:mod:`trainer.tuning.optuna_study`) and searches it
(:class:`trainer.tuning.search.Search`); :func:`conclude` then retrains the best configuration
(or the one ``final_model.pick`` chooses from a trade-off's Pareto front:
:mod:`trainer.tuning.trade_off`) on every non-test row and scores it once on the held-out
test split that no trial has seen (:mod:`trainer.tuning.tuned_model`), so the CV mean ± std
and the test score are reported side by side in the :class:`StudyOutcome`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
import torch

from trainer.data.datasets import Dataset
from trainer.engines.population import Population
from trainer.engines.results import FittedModel
from trainer.model_file.model_format import ModelFile
from trainer.specs.study_spec import Metric, StudySpec, TradeOff, metric_direction
from trainer.tuning.budget import Budget, SharedCounter, spent
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.optuna_study import create_study
from trainer.tuning.population_search import StackBuilder
from trainer.tuning.records import BestTrial, ParetoTrial, SplitRows, StudyResult
from trainer.tuning.search import Search, choose_engine
from trainer.tuning.trade_off import best_trial, chosen_trial, study_front
from trainer.tuning.trial_training import TrialTraining
from trainer.tuning.tuned_model import final_model


@dataclass
class StudyOutcome:
    """A searched study: its best trial (by the metric), the trial chosen for the final model
    (``chosen``: the best, or a trade-off's pick), that trial refitted (``fitted``) and packed
    as a model file (``model``, :mod:`trainer.model_file`; None without a refit), the
    protocol's rows, and a trade-off study's Pareto front (``pareto``, best metric first)."""

    study: optuna.Study
    metric: Metric
    best: optuna.trial.FrozenTrial | None
    fitted: FittedModel | None
    splits: SplitRows
    model: ModelFile | None = None
    chosen: optuna.trial.FrozenTrial | None = None
    trade_off: TradeOff | None = None
    pareto: list[optuna.trial.FrozenTrial] | None = None

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
            trade_off=self.trade_off,
            pareto=None if self.pareto is None else [ParetoTrial.of(t) for t in self.pareto],
            chosen=None if self.chosen is None or self.chosen is self.best else self.chosen.number,
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
    build_stack: StackBuilder = Population,
    sampler_seed: int | None = None,
    compile: bool | None = None,
    budget: Budget | None = None,
    protocol: CVProtocol | None = None,
) -> StudyOutcome:
    """Search until the study holds ``spec.n_trials`` finished trials (or ``timeout_s``).

    ``budget`` reserves each fresh trial (:mod:`trainer.tuning.budget`); processes that search one
    study share one. By default this process alone counts what the storage already holds.

    Diverging trials fail with their reason in ``fail_reason`` and the search goes on.
    ``population`` trials train at once as one stacked model (MLPs and CNNs; by default as
    many as suit the device: :func:`trainer.engines.layout.population_size`); studies with Wilcoxon
    pruning, which decides between folds, train one trial at a time
    (:func:`trainer.tuning.search.choose_engine`). ``build_stack`` builds the stacks (tests
    pass one that fails on purpose); ``compile`` puts their step under ``torch.compile``
    (default: on a GPU only). ``protocol`` is the study's :class:`CVProtocol` where the caller
    made it already (a searcher process gets its parent's).
    """
    protocol = protocol or CVProtocol.of(spec, dataset)
    study = create_study(
        spec, protocol.metric, storage=storage, study_name=study_name, sampler_seed=sampler_seed
    )
    training = TrialTraining(spec, dataset, protocol, device=device)
    Search(
        study,
        choose_engine(training, population=population, compile=compile, build_stack=build_stack),
        budget=budget or SharedCounter.starting_at(spec.n_trials, spent(study)),
        deadline=None if spec.timeout_s is None else time.time() + spec.timeout_s,
        callbacks=callbacks,
    ).run()
    return conclude(study, spec, dataset, protocol, refit_best=refit_best, device=device)


def conclude(
    study: optuna.Study,
    spec: StudySpec,
    dataset: Dataset,
    protocol: CVProtocol,
    *,
    refit_best: bool = True,
    device: torch.device | str = "cpu",
) -> StudyOutcome:
    """The searched study's outcome: its best trial, and if ``refit_best`` the chosen trial
    (:func:`trainer.tuning.trade_off.chosen_trial`: the best unless a trade-off's
    ``final_model.pick`` says otherwise) retrained, tested and packed as a model file by
    :func:`final_model`, as a served study's is."""
    splits = SplitRows.of(protocol.test, protocol.splits)
    trade_off = spec.objective.trade_off
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        return StudyOutcome(study, protocol.metric, None, None, splits, trade_off=trade_off)
    best, front = best_trial(study), study_front(study)
    chosen = chosen_trial(study, spec, best, front)
    fitted, model = None, None
    if refit_best:
        fitted, model = final_model(
            spec,
            dataset,
            protocol,
            chosen,
            device=device,
            study={"name": study.study_name, "dataset": spec.dataset},
        )
        if fitted.test_score is not None:
            study.set_user_attr("test_score", fitted.test_score)
    return StudyOutcome(
        study,
        protocol.metric,
        best,
        fitted,
        splits,
        model,
        chosen=chosen,
        trade_off=trade_off,
        pareto=front,
    )
