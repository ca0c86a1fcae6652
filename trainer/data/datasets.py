"""A dataset as the engines see it, checked once whatever its source.

Every loader (:mod:`trainer.data.builtin_sets`, :mod:`trainer.data.readers`) ends in
:func:`make_dataset`, which validates once for all sources: finite numbers, features ``[samples,
features]`` or ``[samples, *input_shape]`` (kept flat, the shape beside them), matching lengths,
at least two classes, labels mapped to ids. Whether there are enough samples per class for a
given CV protocol is checked by :func:`check_for_cv`, because it depends on the study, not on
the data alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trainer.data.tabular import Table, TableEncoder
from trainer.specs.study_spec import Task

Label = int | float | str

# Labels with at most this many distinct integer values are taken as classes.
MAX_INFERRED_CLASSES = 100
MAX_INPUT_DIMS = 8  # axes of one sample (input_shape)
MAX_CLASSES = 1000


class DatasetError(ValueError):
    """The data cannot be used as given; the message says what to change."""


class DatasetTooLarge(DatasetError):
    """The data exceeds a row, column or byte limit of :class:`ArrayLimits`."""


@dataclass(frozen=True)
class ArrayLimits:
    """Bounds on user data, checked before the data is read into memory.

    An NPZ is compressed, so a small file can declare arrays of any size: its ``.npy``
    headers are checked against these bounds before a single array byte is decompressed.
    ``bytes`` bounds the arrays' total size in memory once read.
    """

    rows: int | None = None
    columns: int | None = None
    bytes: int | None = None

    def check(self, rows: int, columns: int, nbytes: int) -> None:
        if self.rows is not None and rows > self.rows:
            raise DatasetTooLarge(f"{rows} rows; the limit is {self.rows}")
        if self.columns is not None and columns > self.columns:
            raise DatasetTooLarge(f"{columns} feature columns; the limit is {self.columns}")
        if self.bytes is not None and nbytes > self.bytes:
            raise DatasetTooLarge(
                f"the arrays take {nbytes} bytes in memory; the limit is {self.bytes}"
            )


@dataclass(frozen=True)
class Dataset:
    """Features ``X`` (float32 ``[n, d]``) and targets ``y`` (int64 class ids or float32).

    ``input_shape`` is the per-sample shape a CNN sees (``(1, 8, 8)`` for digits,
    ``(1, 40)`` for MNIST-1D, ``(d,)`` for tables); its product is ``d``. ``classes`` are the
    labels in class-id order, of the target's own type (integer labels stay ints).

    ``table`` holds a CSV's raw cells when its encoding must be fitted (categorical or blank
    cells): ``X`` is then that encoding fitted on every row, for shapes and summaries only, and
    training reads :meth:`fold_features`, fitted on each fold's training part.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    task: Task
    input_shape: tuple[int, ...]
    classes: tuple[Label, ...] = ()
    feature_names: tuple[str, ...] = ()
    table: Table | None = None
    dropped_rows: int = 0  # rows left out for a blank target (missing_target="drop")

    def fold_features(self, fit: np.ndarray) -> tuple[np.ndarray, TableEncoder | None]:
        """Every row's features, with the table's encoding (if any) fitted on ``fit`` only."""
        if self.table is None:
            return self.X, None
        if not self.table.layout.needs_fitting:  # numbers only, no blanks: X is the encoding
            return self.X, self.table.fit(fit)
        return self.table.encode(fit)

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    def class_counts(self) -> dict[Label, int]:
        counts = np.bincount(self.y, minlength=len(self.classes))
        return dict(zip(self.classes, counts.tolist(), strict=True))


def make_dataset(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    task: Task | None = None,
    input_shape: tuple[int, ...] | None = None,
    feature_names: tuple[str, ...] = (),
    table: Table | None = None,
    dropped_rows: int = 0,
) -> Dataset:
    """Validate raw arrays and return a :class:`Dataset` (labels mapped to ids 0…C−1)."""
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim > 2:  # [n, *input_shape], as image and signal sets are saved
        X, input_shape = _flat_samples(X, input_shape)
    if X.ndim != 2:
        raise DatasetError(
            "features must be an array [samples, features] or [samples, *input_shape], got "
            f"shape {X.shape}"
        )
    if y.ndim != 1:
        raise DatasetError(f"the target must be a 1-D array, got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise DatasetError(
            f"features have {X.shape[0]} rows but the target has {y.shape[0]} values"
        )
    if X.shape[0] < 2 or X.shape[1] < 1:
        raise DatasetError(f"need at least 2 samples and 1 feature, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise DatasetError(f"features must be real numbers, got dtype {X.dtype}")
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DatasetError(
            f"features must be finite: {int(bad.sum())} NaN/inf values, first at row {row}, "
            f"column {feature_names[col] if feature_names else col}"
        )
    shape = input_shape or (X.shape[1],)
    if min(shape, default=0) < 1:
        raise DatasetError(f"input_shape {shape} must hold positive sizes")
    if math.prod(shape) != X.shape[1]:
        raise DatasetError(f"input_shape {shape} does not hold {X.shape[1]} features")

    task = task or _infer_task(y)
    if task == "classification":
        classes, ids = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise DatasetError(f"classification needs at least 2 classes, found {len(classes)}")
        if len(classes) > MAX_CLASSES:
            raise DatasetError(
                f"the target has {len(classes)} classes; the limit is {MAX_CLASSES} (a numeric "
                "target with many values is a regression: upload it with task=regression)"
            )
        return Dataset(
            name,
            X.astype(np.float32),
            ids.astype(np.int64),
            task,
            shape,
            tuple(_label(c) for c in classes),
            feature_names,
            table,
            dropped_rows,
        )
    try:
        targets = y.astype(np.float32)
    except ValueError as exc:
        raise DatasetError(f"a regression target must be numeric: {exc}") from None
    if not np.isfinite(targets).all():
        raise DatasetError("the regression target must be finite (no NaN/inf)")
    return Dataset(
        name, X.astype(np.float32), targets, task, shape, (), feature_names, table, dropped_rows
    )


def _flat_samples(
    X: np.ndarray, input_shape: tuple[int, ...] | None
) -> tuple[np.ndarray, tuple[int, ...]]:
    """``X`` ``[n, *shape]`` as ``[n, prod(shape)]`` rows and its per-sample shape; an
    ``input_shape`` given beside it must be that shape."""
    shape = tuple(int(n) for n in X.shape[1:])
    if len(shape) > MAX_INPUT_DIMS:
        raise DatasetError(
            f"features of shape {X.shape} have {len(shape)} axes per sample; the limit is "
            f"{MAX_INPUT_DIMS}"
        )
    if input_shape is not None and tuple(input_shape) != shape:
        raise DatasetError(
            f"input_shape {tuple(input_shape)} disagrees with the shape of each sample in X "
            f"{shape} (X is {X.shape}): leave input_shape out, or give {shape}"
        )
    return X.reshape(X.shape[0], math.prod(shape)), shape


def _infer_task(y: np.ndarray) -> Task:
    if not np.issubdtype(y.dtype, np.number) or y.dtype == bool:
        return "classification"
    if not np.isfinite(y).all():
        raise DatasetError("the target must be finite (no NaN/inf)")
    integral = bool(np.all(np.mod(y, 1) == 0))
    if integral and len(np.unique(y)) <= MAX_INFERRED_CLASSES:
        return "classification"
    return "regression"


def _label(label: object) -> Label:
    """A class label as a plain value of its own type: integral numbers as ``int``."""
    if isinstance(label, np.integer | np.bool_) or (
        isinstance(label, float | np.floating) and float(label).is_integer()
    ):
        return int(label)
    if isinstance(label, float | np.floating):
        return float(label)
    return str(label)


def check_for_cv(dataset: Dataset, folds: int, test_fraction: float = 0.0) -> None:
    """Raise :class:`DatasetError` unless stratified ``folds``-fold CV can run on the data.

    Each class needs ``folds`` samples left after the test split, so that every fold
    holds every class at least once; regression needs ``folds`` samples overall.
    """
    keep = 1.0 - test_fraction
    if dataset.task == "regression":
        if math.floor(dataset.n_samples * keep) < folds:
            raise DatasetError(f"{dataset.n_samples} samples are too few for {folds}-fold CV")
        return
    for name, count in dataset.class_counts().items():
        if math.floor(count * keep) < folds:
            needed = math.ceil(folds / keep)
            raise DatasetError(
                f"class {name!r} has {count} samples; {folds}-fold stratified CV"
                + (f" with test_fraction {test_fraction:g}" if test_fraction else "")
                + f" needs at least {needed}"
            )
