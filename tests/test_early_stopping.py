"""Early stopping counts non-improving epochs exactly and the engine restores the best weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from trainer.data.splits import cv_splits
from trainer.engines.early_stopping import EarlyStopping
from trainer.engines.per_trial import FoldRun
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import StudySpec


def run(losses: list[float], patience: int, min_delta: float = 0.0) -> tuple[int, int]:
    """Feed a scripted loss sequence; return (epoch at which it stops, best epoch)."""

    stopper = EarlyStopping(patience, min_delta)
    for epoch, loss in enumerate(losses):
        stopper.step(loss, epoch)
        if stopper.should_stop:
            return epoch, stopper.best_epoch
    return -1, stopper.best_epoch


def test_stops_after_exactly_patience_non_improving_epochs() -> None:
    losses = [1.0, 0.8, 0.7, 0.75, 0.71, 0.9, 0.6, 0.5]
    assert run(losses, patience=3) == (5, 2)  # epochs 3, 4, 5 fail to beat 0.7
    assert run(losses, patience=4) == (-1, 7)  # 0.6 at epoch 6 resets the count


def test_min_delta_requires_a_large_enough_improvement() -> None:
    losses = [1.0, 0.95, 0.92, 0.91]
    assert run(losses, patience=2, min_delta=0.1) == (2, 0)
    assert run(losses, patience=2, min_delta=0.0) == (-1, 3)


def test_equal_loss_is_not_an_improvement() -> None:
    assert run([0.5, 0.5, 0.5], patience=2) == (2, 0)


def test_fold_restores_the_weights_of_its_best_epoch(wine) -> None:
    spec = StudySpec(dataset="builtin:wine", training={"max_epochs": 60, "lr": 0.05})
    config = TrialConfig.from_values(
        spec, {"weight_decay": 0.0, "l1": 0.0, "dropout": 0.0, "bn_momentum": 0.9, "patience": 2}
    )
    split = cv_splits(
        wine.y,
        wine.task,
        np.arange(wine.n_samples),
        folds=3,
        shuffle=True,
        inner_validation=0.3,
        seed=0,
    )[0]
    fold = FoldRun(0, wine, config, split, metric="accuracy", device="cpu", seed=3)
    states = []
    while not fold.done:
        fold.train_epoch()
        if not fold.done:
            states.append(copy.deepcopy(fold.model.state_dict()))
    # It stopped on the epoch that made `patience` consecutive misses.
    last = fold.epoch - 1
    best = fold.stopper.best_epoch
    assert fold.stopper.should_stop and last - best == 2, (best, last)
    assert min(fold.val_loss) == pytest.approx(fold.val_loss[best])
    for name, tensor in fold.model.state_dict().items():
        assert torch.equal(tensor, states[best][name]), name
    assert fold.evaluate() == pytest.approx(fold.best_score)
