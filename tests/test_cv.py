"""The CV protocol: folds partition the data, nothing leaks into the scored fold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.data.datasets import make_dataset
from trainer.data.splits import cv_splits, holdout
from trainer.engines.per_trial import cross_validate
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import StudySpec
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.refit import refit


def config_for(spec: StudySpec, **values: float) -> TrialConfig:
    base = {"weight_decay": 1e-4, "l1": 0.0, "dropout": 0.1, "bn_momentum": 0.1, "patience": 3}
    return TrialConfig.from_values(spec, base | values)


def test_folds_partition_the_pool_and_test_rows_stay_out(digits) -> None:
    pool, test = holdout(digits.y, "classification", 0.2, seed=7)
    splits = cv_splits(
        digits.y, "classification", pool, folds=5, shuffle=True, inner_validation=0.1, seed=7
    )
    assert len(np.intersect1d(pool, test)) == 0
    assert len(pool) + len(test) == digits.n_samples
    scored = np.concatenate([s.score for s in splits])
    assert np.array_equal(np.sort(scored), pool)  # every pool row scored exactly once
    for s in splits:
        parts = [s.fit, s.val, s.score]
        assert sum(map(len, parts)) == len(pool)
        assert len(np.unique(np.concatenate(parts))) == len(pool)
        assert len(np.intersect1d(s.fit, test)) == 0 and len(np.intersect1d(s.val, test)) == 0
        # Stratified: each class's share in the scored fold is its share overall (±1 row).
        expected = np.bincount(digits.y[pool]) / len(pool) * len(s.score)
        assert np.all(np.abs(np.bincount(digits.y[s.score]) - expected) <= 1.0 + 1e-9)


def test_every_sample_is_scored_once_per_trial(wine) -> None:
    spec = StudySpec(dataset="builtin:wine", training={"max_epochs": 2}, cv={"folds": 4})
    protocol = CVProtocol.of(spec, wine)
    result = cross_validate(wine, config_for(spec), protocol.splits, metric="accuracy")
    scored = np.concatenate([f.scored for f in result.folds])
    assert np.array_equal(np.sort(scored), np.arange(wine.n_samples))


def test_standardizer_never_sees_the_scored_fold() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.arange(60) % 2
    splits = cv_splits(
        y, "classification", np.arange(60), folds=3, shuffle=True, inner_validation=0.2, seed=0
    )
    # Plant huge values in fold 0's scored rows: under leakage they would dominate its scaler.
    X[splits[0].score] += 1_000.0
    data = make_dataset("planted", X, y)
    spec = StudySpec(dataset="x", training={"max_epochs": 1}, cv={"folds": 3})
    result = cross_validate(data, config_for(spec), splits, metric="accuracy")
    fold = result.folds[0]
    np.testing.assert_allclose(fold.x_scaler.mean, X[splits[0].fit].mean(0), rtol=1e-5)
    np.testing.assert_allclose(fold.x_scaler.std, X[splits[0].fit].std(0), rtol=1e-5)
    assert np.all(np.abs(fold.x_scaler.mean) < 1.0)  # the planted rows are not in it
    for other in result.folds[1:]:  # the planted rows do train folds 1 and 2
        assert np.all(other.x_scaler.mean > 100.0)


def test_refit_trains_on_every_pool_row_and_scores_the_test_rows(wine) -> None:
    spec = StudySpec(
        dataset="builtin:wine", training={"max_epochs": 50}, cv={"folds": 3, "test_fraction": 0.25}
    )
    protocol = CVProtocol.of(spec, wine)
    fitted = refit(
        wine, config_for(spec), protocol.pool, protocol.test, metric="accuracy", epochs=7
    )
    assert fitted.epochs == len(fitted.train_loss) == 7
    # Standardized with every non-test row, and none of the test rows.
    np.testing.assert_allclose(fitted.x_scaler.mean, wine.X[protocol.pool].mean(0), rtol=1e-5)
    X_test = torch.as_tensor(fitted.x_scaler.transform(wine.X[protocol.test]))
    fitted.model.eval()
    with torch.no_grad():
        predicted = fitted.model(X_test).argmax(1).numpy()
    assert fitted.test_score == pytest.approx((predicted == wine.y[protocol.test]).mean())


def test_regression_mse_is_reported_in_the_targets_units() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 2))
    y = 1000.0 * X[:, 0] + 5000.0  # std ≈ 1000: a z-scored MSE would be ~1e6 times smaller
    data = make_dataset("scaled", X, y, task="regression")
    spec = StudySpec(
        dataset="x",
        task="regression",
        model={"hidden": [], "batch_norm": False},
        training={"max_epochs": 1, "lr": 1e-4},
        cv={"folds": 3},
    )
    protocol = CVProtocol.of(spec, data)
    config = config_for(spec, dropout=0.0)
    mse = cross_validate(data, config, protocol.splits, metric="mse")
    loss = cross_validate(data, config, protocol.splits, metric="loss")
    for a, b in zip(mse.folds, loss.folds, strict=True):
        y_std = data.y[protocol.splits[a.index].fit].std()
        assert a.score == pytest.approx(b.score * y_std**2, rel=1e-4)
    assert mse.mean > 1e4
