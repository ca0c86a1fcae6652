"""What training gives back, whichever engine trained: fold and CV results, fitted models.

Both engines assemble them in one place (:mod:`trainer.engines.folds`); the tuning layer, the
model file and the service read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from trainer.data.preprocessing import Standardizer
from trainer.data.tabular import TableEncoder
from trainer.engines.diagnosis import Diagnosis, diagnose_trial
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import Metric


class DivergedError(RuntimeError):
    """Training produced a NaN or infinite loss; the trial fails, the study goes on."""


@dataclass
class FoldResult:
    """What one fold reports: its score at the best epoch and the curves behind it."""

    index: int
    score: float
    best_epoch: int
    epochs: int
    stopped_early: bool
    train_loss: list[float]
    val_loss: list[float]
    sparsity: float
    nonzero_params: int  # parameters with |θ| ≥ 1e-3 at the best epoch (regularizers.nonzero)
    diagnosis: Diagnosis
    scored: np.ndarray
    x_scaler: Standardizer
    encoder: TableEncoder | None = None


@dataclass
class CVResult:
    """A trial's cross-validation outcome: mean and spread over folds of the objective."""

    metric: Metric
    folds: list[FoldResult]
    n_params: int
    wall_time_s: float
    scores: list[float] = field(init=False)
    mean: float = field(init=False)
    std: float = field(init=False)
    diagnosis: Diagnosis = field(init=False)

    def __post_init__(self) -> None:
        self.scores = [f.score for f in self.folds]
        self.mean = float(np.mean(self.scores))
        self.std = float(np.std(self.scores))
        self.diagnosis = diagnose_trial([f.diagnosis for f in self.folds])


@dataclass
class FittedModel:
    """A configuration's trained model, ready for inference or export: retrained on all
    non-test rows (the refit), or one fold's model of a :class:`FoldEnsemble`."""

    model: nn.Module
    config: TrialConfig
    x_scaler: Standardizer
    y_scaler: Standardizer | None
    epochs: int
    train_loss: list[float]
    test_score: float | None
    encoder: TableEncoder | None = None  # a table's encoding, fitted on the same rows


@dataclass
class FoldEnsemble:
    """A configuration's K fold models, as its cross-validation trained them, and their
    averaged prediction's score on the test rows (None without test rows)."""

    members: list[FittedModel]
    test_score: float | None
