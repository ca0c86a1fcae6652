"""User files: a CSV table (numbers, categories, blanks) or NPZ arrays, read under limits."""

from __future__ import annotations

import csv
import io
import math
import zipfile
import zlib
from array import array
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from trainer.data.builtin_sets import load_builtin
from trainer.data.datasets import (
    MAX_INPUT_DIMS,
    ArrayLimits,
    Dataset,
    DatasetError,
    make_dataset,
)
from trainer.data.tabular import MAX_LEVELS, Table, TableColumn, TableLayout, is_blank
from trainer.specs.study_spec import Task

MissingTarget = Literal["refuse", "drop"]
MAX_CELL_CHARS = 4096  # a category's text or a number; longer is a pasted document


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
