"""The curve diagnosis follows the train-vs-validation rules of trainer/engines/diagnosis.py."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.engines.diagnosis import diagnose_fold, diagnose_trial
from trainer.engines.per_trial import cross_validate
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import StudySpec
from trainer.tuning.cv_protocol import CVProtocol

LN10 = float(np.log(10))


def test_overfitting_val_rises_while_train_falls() -> None:
    train = [1.0, 0.5, 0.3, 0.2, 0.1, 0.05]
    val = [1.0, 0.6, 0.5, 0.55, 0.6, 0.7]
    assert diagnose_fold(train, val, max_epochs=100, baseline_loss=LN10) == "over-fitting"


def test_still_improving_when_the_budget_ends_at_the_best_epoch() -> None:
    train = [2.0, 1.5, 1.2, 1.0, 0.9]
    val = [2.0, 1.6, 1.3, 1.1, 1.0]
    assert diagnose_fold(train, val, max_epochs=5, baseline_loss=LN10) == "still improving"


def test_underfitting_when_training_loss_stays_near_the_trivial_predictor() -> None:
    train = [2.3, 2.2, 2.15, 2.1, 2.1, 2.1]
    val = [2.3, 2.2, 2.15, 2.12, 2.12, 2.13]
    assert diagnose_fold(train, val, max_epochs=100, baseline_loss=LN10) == "under-fitting"


def test_converged_when_validation_flattens_with_a_low_training_loss() -> None:
    train = [1.0, 0.4, 0.2, 0.15, 0.14, 0.14]
    val = [1.0, 0.45, 0.3, 0.29, 0.295, 0.3]
    assert diagnose_fold(train, val, max_epochs=100, baseline_loss=LN10) == "converged"


def test_trial_takes_the_majority_and_ties_go_to_the_more_severe() -> None:
    assert diagnose_trial(["converged", "converged", "over-fitting"]) == "converged"
    assert diagnose_trial(["converged", "over-fitting"]) == "over-fitting"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # No regularization, a long budget, tiny data: a wide MLP memorizes wine.
        ({"weight_decay": 0, "l1": 0, "dropout": 0, "patience": 15, "lr": 0.01}, "over-fitting"),
        # Very strong L2 keeps the weights near zero (without BatchNorm, whose scale
        # invariance would let the network shrink its weights at no cost).
        (
            {"weight_decay": 5.0, "l1": 0, "dropout": 0.0, "patience": 15, "lr": 0.01},
            "under-fitting",
        ),
    ],
)
def test_real_training_curves_are_read_correctly(wine, values: dict, expected: str) -> None:
    spec = StudySpec(
        dataset="builtin:wine",
        model={"hidden": [64], "batch_norm": False},
        training={"max_epochs": 80, "batch_size": 16},
        cv={"folds": 3},
    )
    config = TrialConfig.from_values(spec, {"bn_momentum": 0.1} | values)
    result = cross_validate(wine, config, CVProtocol.of(spec, wine).splits, metric="accuracy")
    assert result.diagnosis == expected, [f.diagnosis for f in result.folds]
