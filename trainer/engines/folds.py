"""A fold as both engines train it: fitted once, seeded alike, and its results assembled once.

A fold is fitted (:meth:`Fold.fit`: its preprocessing on its fit rows only, and the trivial
predictor's loss there) and seeded (:func:`fold_seed`) the same way by both engines; when it
is trained, each engine hands what it recorded to :meth:`Fold.result` (a
:class:`~trainer.engines.results.FoldResult`, with its diagnosis) or to a :class:`TrainedFold`
(its model for use, :meth:`TrainedFold.fitted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from torch import nn

from trainer import rng
from trainer.data.datasets import Dataset
from trainer.data.preprocessing import FoldPreprocessing, fit_fold
from trainer.data.splits import Split
from trainer.engines.diagnosis import diagnose_fold, trivial_loss
from trainer.engines.results import FittedModel, FoldResult
from trainer.engines.trial_config import TrialConfig


def fold_seed(seed: int, fold: int) -> int:
    """Independent seeds per fold, derived from the trial's seed."""
    return rng.derived_seed(seed, fold)


@dataclass(frozen=True)
class Fold:
    """Fold ``index`` as both engines train it: its rows, its preprocessing (fitted on its fit
    rows only) and the trivial predictor's loss on them (the scale of its diagnosis)."""

    index: int
    split: Split
    preprocessing: FoldPreprocessing
    baseline_loss: float

    @classmethod
    def fit(cls, dataset: Dataset, split: Split, index: int) -> tuple[np.ndarray, Fold]:
        """The fold, and every row's features as it sees them (:func:`fit_fold`)."""
        X, preprocessing = fit_fold(dataset, split.fit)
        baseline = trivial_loss(dataset.task, dataset.y[split.fit], dataset.n_outputs)
        return X, cls(index, split, preprocessing, baseline)

    def result(
        self,
        *,
        score: float,
        best_epoch: int,
        epochs: int,
        stopped_early: bool,
        train_loss: list[float],
        val_loss: list[float],
        sparsity: float,
        nonzero_params: int,
        max_epochs: int,
    ) -> FoldResult:
        """What the fold reports, from what its engine recorded while it trained."""
        # Positionally, in FoldResult's order (the parameters' own).
        return FoldResult(
            self.index,
            score,
            best_epoch,
            epochs,
            stopped_early,
            train_loss,
            val_loss,
            sparsity,
            nonzero_params,
            diagnose_fold(
                train_loss, val_loss, max_epochs=max_epochs, baseline_loss=self.baseline_loss
            ),
            self.split.score,
            self.preprocessing.x_scaler,
            self.preprocessing.encoder,
        )


class TrainedFold(NamedTuple):
    """A fold's model at its best epoch (evaluation mode), as either engine leaves it, with its
    training curve and its score on the fold's scored rows."""

    model: nn.Module
    fold: Fold
    train_loss: list[float]
    score: float

    def fitted(self, config: TrialConfig, *, epochs: int, scored: bool) -> FittedModel:
        """The model for use: ``config`` trained ``epochs`` epochs; its test score is the
        fold's score where the scored rows are test rows (``scored``), else None."""
        preprocessing = self.fold.preprocessing
        return FittedModel(
            self.model,
            config,
            preprocessing.x_scaler,
            preprocessing.y_scaler,
            epochs,
            self.train_loss,
            self.score if scored else None,
            preprocessing.encoder,
        )
