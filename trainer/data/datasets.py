"""Datasets: the built-ins of the product spec and user arrays from CSV or NPZ.

Every loader ends in :func:`make_dataset`, which validates once for all sources: finite
numbers, features ``[samples, features]`` or ``[samples, *input_shape]`` (kept flat, the shape
beside them), matching lengths, at least two classes, labels mapped to ids.
Whether there are enough samples per class for a given CV protocol is checked by
:func:`check_for_cv`, because it depends on the study, not on the data alone.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from sklearn import datasets as skdatasets

from trainer.data.mnist1d import make_mnist1d
from trainer.data.poly import make_poly
from trainer.data.tabular import MAX_LEVELS, Table, TableColumn, TableEncoder, TableLayout, is_blank
from trainer.specs.study_spec import Task

Label = int | float | str

BUILTINS = ("digits", "breast_cancer", "wine", "diabetes", "mnist1d", "poly")
MNIST1D_DEFAULT_SIZE = 5_000
MNIST1D_MAX_SIZE = 200_000
# Labels with at most this many distinct integer values are taken as classes.
MAX_INFERRED_CLASSES = 100
MAX_INPUT_DIMS = 8  # axes of one sample (input_shape)


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


# --- built-ins ---------------------------------------------------------------------------


def load_builtin(ref: str) -> Dataset:
    """Load ``builtin:NAME`` (``builtin:mnist1d:SIZE`` selects MNIST-1D's sample count)."""
    _, _, rest = ref.partition("builtin:")
    name, _, size = rest.partition(":")
    if name not in BUILTINS:
        raise DatasetError(f"unknown built-in dataset {name!r}; choose one of {list(BUILTINS)}")
    if size and name != "mnist1d":
        raise DatasetError(f"only builtin:mnist1d takes a size, got {ref!r}")
    if name == "mnist1d":
        n = int(size) if size.isdigit() else MNIST1D_DEFAULT_SIZE
        if (size and not size.isdigit()) or not 10 <= n <= MNIST1D_MAX_SIZE:
            raise DatasetError(f"mnist1d size must be an integer in [10, {MNIST1D_MAX_SIZE}]")
        X, y = make_mnist1d(n)
        return make_dataset(ref, X, y, task="classification", input_shape=(1, X.shape[1]))
    if name == "poly":
        X, y = make_poly()
        return make_dataset(ref, X, y, task="regression")
    loader = {
        "digits": skdatasets.load_digits,
        "breast_cancer": skdatasets.load_breast_cancer,
        "wine": skdatasets.load_wine,
        "diabetes": skdatasets.load_diabetes,
    }[name]
    bunch = loader()
    task: Task = "regression" if name == "diabetes" else "classification"
    shape = (1, 8, 8) if name == "digits" else None
    return make_dataset(
        ref,
        bunch.data,
        bunch.target,
        task=task,
        input_shape=shape,
        feature_names=tuple(str(f) for f in bunch.feature_names),
    )


# --- user files --------------------------------------------------------------------------


MissingTarget = Literal["refuse", "drop"]
MAX_CELL_CHARS = 4096  # a category's text or a number; longer is a pasted document
MAX_CLASSES = 1000


class _ColumnCells:
    """One CSV column's cells as they are read: numbers (NaN for blanks and text), and level
    codes while the column has at most MAX_LEVELS distinct values (beyond that it can only be
    numeric or dropped, so no more texts are kept)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values = array("d")
        self.codes: array[int] | None = array("i")
        self.levels: dict[str, int] = {}
        self.text: str | None = None  # the first cell that is not a number
        self.blanks = 0

    def add(self, cell: str, line: int) -> None:
        cell = cell.strip()
        if "\x00" in cell:  # no database stores it in text, and no table means it
            raise DatasetError(f"CSV line {line}, column {self.name!r}: a NUL character in a cell")
        if len(cell) > MAX_CELL_CHARS:
            raise DatasetError(
                f"CSV line {line}, column {self.name!r}: a cell of {len(cell)} characters; "
                f"the limit is {MAX_CELL_CHARS}"
            )
        if is_blank(cell):
            cell, value = "", math.nan
            self.blanks += 1
        else:
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
                self.text = self.text or cell
            if not math.isnan(value) and not math.isfinite(value):
                raise DatasetError(
                    f"CSV line {line}, column {self.name!r}: {cell[:100]!r} is not finite"
                )
        self.values.append(value)
        if self.codes is not None:
            code = self.levels.setdefault(cell, len(self.levels))
            if len(self.levels) > MAX_LEVELS:
                self.codes, self.levels = None, {}
            else:
                self.codes.append(code)

    def column(self, keep: np.ndarray) -> tuple[TableColumn, np.ndarray | None]:
        """The column's treatment and its raw values over the ``keep`` rows (None: dropped)."""
        values = np.frombuffer(self.values, dtype=np.float64)[keep]
        if len(values) and self.blanks == len(self.values):
            raise DatasetError(f"column {self.name!r} is blank in every row; remove it")
        if self.text is None:
            blanks = int(np.isnan(values).sum())
            return TableColumn(self.name, "numeric", blanks=blanks), values
        if self.codes is None:
            reason = (
                f"more than {MAX_LEVELS} distinct values, some not numbers (e.g. "
                f"{self.text[:40]!r}): an identifier or free text, not a category"
            )
            return TableColumn(self.name, "dropped", reason=reason), None
        codes = np.frombuffer(self.codes, dtype=np.int32)[keep]
        # Levels in sorted order (stable across uploads of the same table), blanks first.
        order = sorted(self.levels, key=lambda level: (level != "", level))
        rank = np.empty(len(order), dtype=np.float64)
        for new, level in enumerate(order):
            rank[self.levels[level]] = new
        blanks = int(np.sum(codes == self.levels.get("", -1)))
        return TableColumn(self.name, "categorical", tuple(order), blanks), rank[codes]


def load_csv(
    source: str | Path | bytes,
    target: str,
    *,
    name: str = "upload",
    task: Task | None = None,
    limits: ArrayLimits | None = None,
    missing_target: MissingTarget = "refuse",
) -> Dataset:
    """Read a CSV with a header row; ``target`` names the label column, all others are features.

    Feature columns are numeric, categorical or dropped (:mod:`trainer.data.tabular`).
    A blank target cell is refused, naming its lines, unless ``missing_target="drop"`` drops
    those rows (``Dataset.dropped_rows`` counts them). Cells are kept as numbers and small
    level codes (12 bytes a cell, not a Python object), and ``limits`` are checked as the rows come.
    """
    limits = limits or ArrayLimits()
    reader = csv.reader(io.StringIO(_read_text(source)))
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise DatasetError("the CSV needs a header row and at least one data row")
        header = [h.strip() for h in header]
        if target not in header:
            raise DatasetError(f"target column {target!r} not in the CSV header {header[:50]}")
        seen: set[str] = set()
        for name in header:
            if name in seen:
                raise DatasetError(f"the CSV header names column {name!r} twice")
            seen.add(name)
        t = header.index(target)
        features = [h for i, h in enumerate(header) if i != t]
        limits.check(0, len(features), 0)
        cells = [_ColumnCells(f) for f in features]
        labels: list[str] = []
        lines: list[int] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            if len(row) != len(header):
                raise DatasetError(
                    f"CSV line {line} has {len(row)} fields, the header has {len(header)}"
                )
            labels.append(row[t].strip())
            lines.append(line)
            limits.check(len(labels), len(features), 12 * len(labels) * len(features))
            for column, cell in zip(cells, (c for i, c in enumerate(row) if i != t), strict=True):
                column.add(cell, line)
    except csv.Error as exc:
        raise DatasetError(f"CSV line {reader.line_num}: {exc}") from None
    if not labels:
        raise DatasetError("the CSV needs a header row and at least one data row")
    blank = np.array([is_blank(label) for label in labels])
    if blank.any() and missing_target != "drop":
        first = ", ".join(str(lines[i]) for i in np.flatnonzero(blank)[:5])
        raise DatasetError(
            f"target column {target!r} is blank in {int(blank.sum())} of {len(labels)} rows "
            f"(CSV lines {first}{', …' if blank.sum() > 5 else ''}); fill them in, or upload "
            "with missing_target=drop to leave those rows out"
        )
    keep = np.flatnonzero(~blank)
    columns, raw = [], []
    for column in cells:
        treatment, values = column.column(keep)
        columns.append(treatment)
        if values is not None:
            raw.append(values)
    layout = TableLayout(tuple(columns))
    if not raw:
        dropped = "; ".join(f"{c.name!r}: {c.reason}" for c in columns)
        raise DatasetError(f"no feature column is left: {dropped}")
    limits.check(len(keep), layout.width, 0)
    table = Table(layout, np.stack(raw, axis=1))
    return make_dataset(
        name,
        table.encode(np.arange(len(keep)))[0],  # for shapes and summaries; folds re-fit it
        _numeric_if_possible([labels[i] for i in keep]),
        task=task,
        feature_names=layout.feature_names,
        table=table,
        dropped_rows=len(labels) - len(keep),
    )


NPZ_ARRAYS = ("X", "y", "input_shape")


def load_npz(
    source: str | Path | bytes,
    *,
    name: str = "upload",
    task: Task | None = None,
    limits: ArrayLimits | None = None,
) -> Dataset:
    """Read arrays ``X`` and ``y`` (and optionally ``input_shape``) from an ``.npz`` file.

    ``X`` is ``[n, d]`` (with ``input_shape``, if given, holding ``d`` values) or, as image and
    signal sets are saved, ``[n, *input_shape]``: the shape is then ``X``'s own, and an
    ``input_shape`` given beside it must agree.

    Each member's ``.npy`` header (shape and dtype) is read and checked against ``limits``
    before its data is decompressed, so a zip bomb is refused unexpanded. Object arrays are
    refused from the header: a pickle could run code, and nothing is ever unpickled.
    """
    limits = limits or ArrayLimits()
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with zipfile.ZipFile(handle) as archive:
            present = [n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")]
            missing = {"X", "y"} - set(present)
            if missing:
                raise DatasetError(
                    f"the NPZ file lacks array(s) {sorted(missing)}; it has {present[:20]}"
                )
            members = {key: archive.getinfo(f"{key}.npy") for key in NPZ_ARRAYS if key in present}
            arrays = _read_npy_members(archive, members, limits)
    except DatasetError:
        raise
    except (
        ValueError,
        OSError,
        EOFError,
        RuntimeError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ) as exc:
        raise DatasetError(f"not a readable NPZ file of numeric arrays: {exc}") from None
    shape = None
    if "input_shape" in arrays:
        shape = tuple(int(s) for s in arrays["input_shape"])
    return make_dataset(name, arrays["X"], arrays["y"], task=task, input_shape=shape)


def _read_npy_members(
    archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], limits: ArrayLimits
) -> dict[str, np.ndarray]:
    headers = {}
    for key, info in members.items():
        with archive.open(info) as member:
            headers[key] = _npy_header(key, member)
    x_shape = headers["X"][0]
    rows = x_shape[0] if x_shape else 0
    columns = math.prod(x_shape[1:]) if len(x_shape) > 1 else 0
    nbytes = sum(math.prod(shape) * dtype.itemsize for shape, _, dtype in headers.values())
    # Features become float32 in memory, whatever dtype the file holds.
    limits.check(rows, columns, nbytes + rows * columns * 4)
    if "input_shape" in headers:
        shape, _, dtype = headers["input_shape"]
        if len(shape) != 1 or shape[0] > MAX_INPUT_DIMS or dtype.kind not in "iu":
            raise DatasetError(
                f"input_shape must be a 1-D integer array of at most {MAX_INPUT_DIMS} values, "
                f"got shape {shape} of dtype {dtype}"
            )
    arrays = {}
    for key, info in members.items():
        shape, fortran, dtype = headers[key]
        with archive.open(info) as member:
            _npy_header(key, member)
            size = math.prod(shape) * dtype.itemsize
            data = member.read(size)
            trailing = member.read(1)  # decompresses one more chunk at most
        if len(data) < size:
            raise DatasetError(f"array {key!r} is truncated: {len(data)} of {size} bytes of data")
        if trailing:
            raise DatasetError(f"array {key!r} has data beyond the {shape} its header declares")
        flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape))
        arrays[key] = flat.reshape(shape, order="F" if fortran else "C")
    return arrays


def _npy_header(key: str, member: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """``(shape, fortran_order, dtype)`` of a ``.npy`` stream, refusing object dtypes."""
    version = np.lib.format.read_magic(member)
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in readers:
        raise DatasetError(f"array {key!r}: unsupported .npy format version {version}")
    shape, fortran, dtype = readers[version](member)
    if dtype.hasobject:
        raise DatasetError(
            f"not a readable NPZ file of numeric arrays: array {key!r} holds Python objects "
            f"(dtype {dtype}), which would need unpickling; save numbers or strings"
        )
    if dtype.itemsize == 0:
        raise DatasetError(f"array {key!r} has an empty dtype {dtype}")
    if any(n < 0 for n in shape):
        raise DatasetError(f"array {key!r} declares a negative dimension in its shape {shape}")
    return tuple(int(n) for n in shape), bool(fortran), dtype


def _read_text(source: str | Path | bytes) -> str:
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"the CSV is not UTF-8 text: {exc}") from None


def _numeric_if_possible(labels: list[str]) -> np.ndarray:
    try:
        return np.array([float(v) for v in labels])
    except ValueError:
        return np.array(labels)


def load_dataset(ref: str, *, target: str | None = None, task: Task | None = None) -> Dataset:
    """``builtin:NAME`` or a path to a ``.csv`` (with ``target``) or ``.npz`` file."""
    if ref.startswith("builtin:"):
        return load_builtin(ref)
    path = Path(ref)
    if not path.is_file():
        raise DatasetError(f"dataset {ref!r} is neither 'builtin:NAME' nor a readable file")
    if path.suffix.lower() == ".npz":
        return load_npz(path, name=path.name, task=task)
    if path.suffix.lower() == ".csv":
        if target is None:
            raise DatasetError("a CSV dataset needs the name of its target column")
        return load_csv(path, target, name=path.name, task=task)
    raise DatasetError(f"unsupported dataset file {path.name!r}: use .csv or .npz")
