"""Preprocessing fitted on a fold's training part only (fitting it on more would leak).

A fold's features are its table's encoding (if any) and then z = (x − μ)/σ per feature, its
regression targets z = (y − μ_y)/σ_y, every statistic taken on the fold's fit rows. Both
engines and the refit fit a fold here (:func:`fit_fold`); a model file keeps the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data.datasets import Dataset
from trainer.data.tabular import TableEncoder

# Constant features (e.g. border pixels of digits) keep unit scale instead of dividing by 0.
MIN_STD = 1e-8


@dataclass(frozen=True)
class Standardizer:
    """z = (x − μ) / σ with μ, σ of the rows it was fitted on."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardizer:
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std < MIN_STD, 1.0, std))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean


@dataclass(frozen=True)
class FoldPreprocessing:
    """A fold's preprocessing: the table's encoder (None: not a table), the features'
    standardizer and, for regression, the targets' (None for classification)."""

    x_scaler: Standardizer
    y_scaler: Standardizer | None
    encoder: TableEncoder | None


def fit_fold(dataset: Dataset, fit: np.ndarray) -> tuple[np.ndarray, FoldPreprocessing]:
    """Every row's features as the fold sees them (a table encoded by the fold's encoder; not
    yet standardized) and the fold's preprocessing, all fitted on the rows ``fit``."""
    X, encoder = dataset.fold_features(fit)
    y_scaler = Standardizer.fit(dataset.y[fit, None]) if dataset.task == "regression" else None
    return X, FoldPreprocessing(Standardizer.fit(X[fit]), y_scaler, encoder)
