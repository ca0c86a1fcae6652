"""The refit: the chosen configuration retrained on every non-test row, scored on the test rows.

It trains by the population engine (:mod:`trainer.engines.population`) as a stack of one model whose
one "fold" fits the whole pool and has no validation rows: the epoch count comes from
cross-validation (the folds' median best epoch), as is usual when a model is refitted on all
its data, so no row is held back for early stopping and the last weights are the model. The
search and the refit so share one engine; the refit also needs no ``torch.optim``, whose first
use imports ``torch._dynamo`` (about 3 s on a small CPU, at the end of every ``regtune tune``).
A network the population cannot stack is refitted by the per-trial engine, the same way. Either
engine hands back its trained fold, and the fitted model is assembled from it once
(:meth:`trainer.engines.folds.TrainedFold.fitted`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from trainer.data.datasets import Dataset
from trainer.data.splits import Split
from trainer.engines.folds import TrainedFold, fold_seed
from trainer.engines.per_trial import FoldRun
from trainer.engines.population import Population
from trainer.engines.results import DivergedError, FittedModel
from trainer.engines.stacking import Unstackable
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import Metric

REFIT_STREAM = 2**31 - 1  # the refit draws its own seed, apart from every fold's


def refit(
    dataset: Dataset,
    config: TrialConfig,
    pool: np.ndarray,
    test: np.ndarray,
    *,
    metric: Metric,
    epochs: int,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> FittedModel:
    """Retrain ``config`` on every row of ``pool`` for ``epochs`` epochs, then score it on
    ``test`` (no score without test rows). Raises :class:`DivergedError` on a NaN/inf loss."""
    fixed = replace(config, training=config.training.model_copy(update={"max_epochs": epochs}))
    split = Split(pool, pool[:0], test)
    model_seed = fold_seed(seed, REFIT_STREAM)
    try:
        # Never compiled: one small model once, where compiling would cost more than it saves.
        population = Population(dataset, [split], fixed, slots=1, metric=metric, device=device)
    except Unstackable:  # a plugin network the population engine cannot stack
        run = FoldRun(0, dataset, fixed, split, metric=metric, device=device, seed=model_seed)
        while not run.done:
            run.train_epoch()  # raises DivergedError on a NaN/inf loss
        trained = run.trained()
    else:
        trained = train_stacked(population, fixed, model_seed)
    return trained.fitted(config, epochs=epochs, scored=len(test) > 0)


def train_stacked(population: Population, config: TrialConfig, seed: int) -> TrainedFold:
    """``config`` trained in slot 0 of a one-fold ``population``, its model seeded ``seed``,
    to its last epoch. Raises :class:`DivergedError` on a NaN/inf loss."""
    population.assign(0, config, seed, fold_seeds=[seed])
    while True:
        population.train_epoch()
        (report,) = population.end_epoch()
        if report.diverged:
            loss = population.record.train_curves[0][-1]
            raise DivergedError(f"refit diverged at epoch {report.epoch}: training loss {loss}")
        if report.finished:
            return population.trained(0, 0)
