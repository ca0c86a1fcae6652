"""A study's objectives: its metric and, with ``objective.trade_off``, the network's size.

Without a trade-off a study has one objective, the metric in its direction, and everything
reads as it always has. With one it has two, ``[metric, size]``, the size minimized:
``parameters`` (the trial's parameter count) or ``nonzero_parameters`` (its parameters with
|θ| ≥ 1e-3 at the kept epoch, mean over folds: :func:`trainer.engines.regularizers.nonzero`).
What a completed trial is told is read from its record, here alone (:func:`told`), whichever
engine trained it.

Optuna refuses ``Trial.report`` and ``Trial.should_prune`` in a multi-objective study, but
regtune's pruners decide from the metric's learning curve: :func:`report` and
:func:`should_prune` store it and ask the study's pruner about it in either kind of study
(:mod:`trainer.tuning.optuna_internals`). The result of a trade-off is its Pareto front
(:func:`pareto_front`); the best trial stays the best by the metric (:func:`best_by_metric`),
and ``final_model.pick`` (:func:`picked`) says which front trial the final model refits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from trainer.specs.study_spec import Metric, StudySpec, TradeOff, Within, metric_direction
from trainer.tuning import optuna_internals
from trainer.tuning.records import TrialRecord, best_first


def study_directions(
    metric: Metric, trade_off: TradeOff | None
) -> list[Literal["maximize", "minimize"]]:
    """The study's directions: the metric's, then (a trade-off) "minimize" for the size."""
    first = metric_direction(metric)
    return [first] if trade_off is None else [first, "minimize"]


def objective_names(metric: Metric, trade_off: TradeOff | None) -> list[str]:
    """The objectives' names, as the dashboard's axes read: ``["accuracy", "parameters"]``."""
    return [metric] if trade_off is None else [metric, trade_off]


def size(trade_off: TradeOff, record: TrialRecord) -> float:
    """A completed trial's size by ``trade_off``, from its record."""
    value = record.n_params if trade_off == "parameters" else record.nonzero_params
    assert value is not None, "a completed trial records its sizes"
    return float(value)


def told(spec: StudySpec, record: TrialRecord) -> float | list[float]:
    """What a completed trial is told: its CV mean, and with a trade-off its size too."""
    assert record.cv_mean is not None, "a completed trial records its CV mean"
    trade_off = spec.objective.trade_off
    return record.cv_mean if trade_off is None else [record.cv_mean, size(trade_off, record)]


def report(trial: optuna.Trial, step: int, value: float) -> None:
    """The metric's intermediate value at ``step`` (an epoch's fold mean, or a fold's score),
    for the pruner and the dashboard's curves."""
    if len(trial.study.directions) == 1:
        trial.report(value, step)
    else:
        optuna_internals.report_intermediate(trial, step, value)


def should_prune(trial: optuna.Trial) -> bool:
    """Whether the study's pruner stops ``trial``, judged on the metric's values alone."""
    if len(trial.study.directions) == 1:
        return trial.should_prune()
    return optuna_internals.prune_on_metric(trial)


def metric_of(trial: FrozenTrial) -> float:
    """A completed trial's metric: its value, or the first of its two."""
    assert trial.values, "a completed trial has values"
    return trial.values[0]


def best_by_metric(trials: Sequence[FrozenTrial], direction: str) -> FrozenTrial | None:
    """The best completed trial by the metric (the lowest number among equals); None before
    one completes. In a single-objective study, Optuna's ``best_trial``."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not done:
        return None
    sign = best_first(direction)
    return min(done, key=lambda t: (sign * metric_of(t), t.number))


def front_rows(numbers: Sequence[int], values: np.ndarray, directions: Sequence[str]) -> list[int]:
    """The rows of ``values`` ``[n, 2]`` (completed trials' metric and size, ``numbers`` the
    trials') that no other row beats on both objectives in ``directions``
    (:func:`study_directions`; Optuna's ``Study.best_trials`` rule), best metric first, then
    smallest, then first."""
    on = optuna_internals.on_pareto_front(values, directions)
    sign = best_first(directions[0])
    return sorted(
        np.flatnonzero(on).tolist(),
        key=lambda r: (sign * values[r, 0], values[r, 1], numbers[r]),
    )


def pareto_front(trials: Sequence[FrozenTrial], directions: Sequence[str]) -> list[FrozenTrial]:
    """The completed trials of ``trials`` on the Pareto front, in :func:`front_rows`' order."""
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    values = np.array([t.values for t in done], dtype=float).reshape(len(done), len(directions))
    return [done[r] for r in front_rows([t.number for t in done], values, directions)]


def picked(
    front: Sequence[FrozenTrial], best: FrozenTrial, pick: Within | str, direction: str
) -> FrozenTrial:
    """The trial the final model refits: ``best`` (``pick`` "best"), or the smallest trial
    of ``front`` whose metric is within ``pick.within`` of ``best``'s (then the better metric,
    then the lower number). A front holds a trial as good as ``best``, so one always is."""
    if not isinstance(pick, Within):
        return best
    sign = best_first(direction)
    near = [t for t in front if sign * (metric_of(t) - metric_of(best)) <= pick.within]
    return min(near or [best], key=lambda t: (t.values[-1], sign * metric_of(t), t.number))


def front_and_pick(
    spec: StudySpec,
    metric: Metric,
    front_of: Callable[[Sequence[str]], list[FrozenTrial]],
    best: FrozenTrial | None,
) -> tuple[list[FrozenTrial], FrozenTrial | None]:
    """A trade-off study's Pareto front, as ``front_of(directions)`` finds it (from trials
    in memory, or from the tables), and the trial ``final_model.pick`` chooses from it
    (:func:`picked`; None without a ``best``)."""
    assert spec.objective.trade_off is not None, "a trade-off study"
    directions = study_directions(metric, spec.objective.trade_off)
    front = front_of(directions)
    chosen = None if best is None else picked(front, best, spec.final_model.pick, directions[0])
    return front, chosen


def directions_of(study: optuna.Study) -> list[str]:
    """A study's directions as words: ``["maximize", "minimize"]``."""
    return [d.name.lower() for d in study.directions]


def study_front(study: optuna.Study) -> list[FrozenTrial] | None:
    """A trade-off study's Pareto front (:func:`pareto_front`); None with one objective."""
    if len(study.directions) == 1:
        return None
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return pareto_front(done, directions_of(study))


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The study's best trial by the metric: Optuna's ``best_trial`` with one objective,
    :func:`best_by_metric` with two. Raises ValueError before a trial completes, as Optuna's."""
    if len(study.directions) == 1:
        return study.best_trial
    best = best_by_metric(study.get_trials(deepcopy=False), directions_of(study)[0])
    if best is None:
        raise ValueError("no trial of the study has completed")
    return best


def chosen_trial(
    study: optuna.Study,
    spec: StudySpec,
    best: FrozenTrial | None = None,
    front: list[FrozenTrial] | None = None,
) -> FrozenTrial:
    """The trial the final model refits: the best, or the one ``final_model.pick`` picks
    from a trade-off's front (:func:`picked`). ``best`` and ``front``, when the caller has
    read them already, spare reading the study's trials again."""
    best = best if best is not None else best_trial(study)
    front = front if front is not None else study_front(study)
    if front is None:
        return best
    return picked(front, best, spec.final_model.pick, directions_of(study)[0])
