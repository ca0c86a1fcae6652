"""Standardization fitted on a fold's training part only (fitting it on more would leak)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
