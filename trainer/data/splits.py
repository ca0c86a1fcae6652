"""The cross-validation protocol: held-out test split, k folds, inner validation splits.

All splits are index arrays into the dataset and depend only on the study's seed, so every
trial of a study is scored on the same folds (which paired tests such as Wilcoxon need).
:class:`trainer.tuning.records.SplitRows` is the protocol as a user reads it.

scikit-learn draws them, imported on first use: it takes a second to import (SciPy's
statistics come with it), which ``regtune tune`` spends in a helper process while it imports
torch (:mod:`trainer.tuning.prefetch`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data.datasets import Dataset, check_for_cv
from trainer.specs.study_spec import CVSpec, Task


@dataclass(frozen=True)
class Split:
    """One fold: ``fit`` takes the steps, ``val`` drives early stopping, ``score`` is scored."""

    fit: np.ndarray
    val: np.ndarray
    score: np.ndarray


def holdout(
    y: np.ndarray, task: Task, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(pool, test)`` indices; ``test`` is empty when ``test_fraction`` is 0."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    if test_fraction == 0:
        return index, index[:0]
    pool, test = train_test_split(
        index,
        test_size=test_fraction,
        random_state=seed,
        stratify=y if task == "classification" else None,
    )
    return np.sort(pool), np.sort(test)


def inner_split(
    index: np.ndarray, y: np.ndarray, task: Task, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Carve ``(fit, val)`` out of ``index``, stratified where every class allows it."""
    from sklearn.model_selection import train_test_split

    labels = y[index]
    stratify = None
    if task == "classification":
        counts = np.bincount(labels)
        counts = counts[counts > 0]
        n_val = int(np.ceil(fraction * len(index)))
        if counts.min() >= 2 and n_val >= len(counts) and len(index) - n_val >= len(counts):
            stratify = labels
    fit, val = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(fit), np.sort(val)


def cv_splits(
    y: np.ndarray,
    task: Task,
    pool: np.ndarray,
    *,
    folds: int,
    shuffle: bool,
    inner_validation: float,
    seed: int,
) -> list[Split]:
    """Stratified (classification) or plain k-fold over ``pool``; each pool index scored once."""
    from sklearn.model_selection import KFold, StratifiedKFold

    kfold = (StratifiedKFold if task == "classification" else KFold)(
        n_splits=folds, shuffle=shuffle, random_state=seed if shuffle else None
    )
    splits = []
    for k, (train, scored) in enumerate(kfold.split(pool, y[pool])):
        fit, val = inner_split(pool[train], y, task, inner_validation, seed + k)
        splits.append(Split(fit, val, np.sort(pool[scored])))
    return splits


@dataclass(frozen=True)
class ProtocolRows:
    """A study's rows: the ``pool`` the folds cut, the held-out ``test`` rows, the folds."""

    pool: np.ndarray
    test: np.ndarray
    splits: list[Split]


def protocol_rows(dataset: Dataset, cv: CVSpec, seed: int) -> ProtocolRows:
    """The rows ``cv`` draws from ``dataset`` under ``seed`` (:class:`DatasetError` where the
    data cannot be cut so)."""
    check_for_cv(dataset, cv.folds, cv.test_fraction)
    pool, test = holdout(dataset.y, dataset.task, cv.test_fraction, seed)
    splits = cv_splits(
        dataset.y,
        dataset.task,
        pool,
        folds=cv.folds,
        shuffle=cv.shuffle,
        inner_validation=cv.inner_validation,
        seed=seed,
    )
    return ProtocolRows(pool, test, splits)
