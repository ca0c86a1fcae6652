"""Tables with string and blank cells: each column's treatment, and its encoding fitted per fold.

A column of a CSV is, by its cells:

* **numeric** when every non-blank cell is a number. A blank cell (empty, ``NA``, ``NaN``,
  ``N/A``, ``null``) is imputed with the median of the fold's training part, and a column that
  has blanks gets a missing-indicator feature (1 where the cell was blank);
* **categorical** when some cell is not a number and it has at most :data:`MAX_LEVELS`
  distinct values: one-hot over its levels, a blank being a level of its own. A level the
  fold's training part never shows is all zeros, as a category never seen in training must be;
* **dropped** when it has more distinct strings than that (an identifier, a free-text name):
  one-hot columns for it would memorize rows. The summary says so.

Encoding, imputation and the standardization after them are *fitted* steps: each fold fits
them on its own training part only (:meth:`Table.fit`), or the scored rows' medians and
levels would leak into the model that scores them. The encoded layout is fixed by the table
(every level and indicator it has), not by the fold, so that all folds of a population share
one input width; a fold that never saw a level simply has zeros in its column. The fitted
state is a few arrays (medians, seen levels), so a model file holds it as plain values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

MAX_LEVELS = 50
BLANKS = frozenset({"", "na", "nan", "n/a", "null", "none"})

ColumnKind = Literal["numeric", "categorical", "dropped"]


def is_blank(cell: str) -> bool:
    return cell.strip().lower() in BLANKS


@dataclass(frozen=True)
class TableColumn:
    """One raw feature column and how it is treated."""

    name: str
    kind: ColumnKind
    levels: tuple[str, ...] = ()  # categorical: the level of each code ("" is a blank)
    blanks: int = 0  # blank cells (numeric: imputed per fold)
    reason: str | None = None  # dropped: why

    def encoded_names(self) -> list[str]:
        if self.kind == "numeric":
            return [self.name] + ([f"{self.name} (missing)"] if self.blanks else [])
        if self.kind == "categorical":
            return [f"{self.name}={level or '(blank)'}" for level in self.levels]
        return []

    def summary(self) -> dict[str, Any]:
        """The upload summary's line for this column."""
        out: dict[str, Any] = {"name": self.name, "treatment": self.kind}
        if self.kind == "numeric":
            out["imputed"] = self.blanks
        elif self.kind == "categorical":
            out["levels"] = list(self.levels)
        else:
            out["reason"] = self.reason
        return out

    def as_plain(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "levels": list(self.levels),
            "blanks": self.blanks,
            "reason": self.reason,
        }

    @classmethod
    def from_plain(cls, value: dict[str, Any]) -> TableColumn:
        return cls(
            str(value["name"]),
            value["kind"],
            tuple(str(v) for v in value["levels"]),
            int(value["blanks"]),
            value.get("reason"),
        )


@dataclass(frozen=True)
class TableLayout:
    """The columns of a table, in file order, dropped ones included."""

    columns: tuple[TableColumn, ...]

    @property
    def kept(self) -> tuple[TableColumn, ...]:
        return tuple(c for c in self.columns if c.kind != "dropped")

    @property
    def raw_names(self) -> tuple[str, ...]:
        """The feature columns a row must have, in order (dropped ones are not read)."""
        return tuple(c.name for c in self.kept)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The encoded features' names, in the model's input order."""
        return tuple(name for c in self.kept for name in c.encoded_names())

    @property
    def width(self) -> int:
        return len(self.feature_names)

    @property
    def needs_fitting(self) -> bool:
        """Whether encoding depends on the rows it is fitted on (else it is the identity)."""
        return any(c.kind == "categorical" or c.blanks for c in self.kept)

    def raw(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        """Raw cells (one sequence per row, in :attr:`raw_names` order) as the float64 matrix
        the encoder reads: numbers (NaN for blanks) and level codes (−1 for an unknown
        level)."""
        kept = self.kept
        codes = [{level: i for i, level in enumerate(c.levels)} for c in kept]
        out = np.empty((len(rows), len(kept)), dtype=np.float64)
        for r, row in enumerate(rows):
            if len(row) != len(kept):
                raise ValueError(
                    f"row {r} has {len(row)} values; the model reads {len(kept)} columns "
                    f"({', '.join(self.raw_names[:8])}{', …' if len(kept) > 8 else ''})"
                )
            for j, (column, cell) in enumerate(zip(kept, row, strict=True)):
                out[r, j] = _cell_value(column, codes[j], cell)
        return out

    def read(self, rows: Any) -> np.ndarray:
        """:meth:`raw` of rows as a user holds them: a pandas DataFrame or a list of dicts
        (columns by name; others, such as the target, are ignored), or rows of values in
        :attr:`raw_names` order (a list of lists, a numeric array)."""
        names = self.raw_names
        if hasattr(rows, "columns") and hasattr(rows, "to_dict"):  # a DataFrame, duck-typed
            rows = rows.to_dict(orient="records")
        if isinstance(rows, dict):
            rows = [rows]
        if isinstance(rows, list | tuple) and rows and isinstance(rows[0], dict):
            present = set().union(*(r.keys() for r in rows))
            missing = [n for n in names if n not in present]
            if missing:
                raise ValueError(
                    f"the rows lack column(s) {missing[:8]}; the model reads {list(names)[:20]}"
                )
            return self.raw([[r.get(n) for n in names] for r in rows])
        array = np.asarray(rows, dtype=object)
        if array.ndim == 1:  # one row
            array = array[None]
        if array.ndim != 2:
            raise ValueError(f"rows must be 2-D [n, {len(names)}], got shape {array.shape}")
        return self.raw(array.tolist())

    def fit(self, raw: np.ndarray) -> TableEncoder:
        """The encoder fitted on ``raw`` rows (a fold's training part)."""
        kept = self.kept
        medians, seen = [], []
        for j, column in enumerate(kept):
            values = raw[:, j]
            if column.kind == "numeric":
                present = values[~np.isnan(values)]
                # A column blank in every training row has no median: impute 0.
                medians.append(float(np.median(present)) if len(present) else 0.0)
            else:
                codes = values[values >= 0].astype(np.int64)
                seen.append(np.bincount(codes, minlength=len(column.levels)) > 0)
        return TableEncoder(self, np.array(medians), tuple(seen))

    def as_plain(self) -> list[dict[str, Any]]:
        return [c.as_plain() for c in self.columns]

    @classmethod
    def from_plain(cls, value: Sequence[dict[str, Any]]) -> TableLayout:
        return cls(tuple(TableColumn.from_plain(v) for v in value))


def _cell_value(column: TableColumn, codes: dict[str, int], cell: Any) -> float:
    blank = cell is None or (isinstance(cell, float) and math.isnan(cell))
    if column.kind == "numeric":
        if blank or (isinstance(cell, str) and is_blank(cell)):
            return math.nan
        try:
            return float(cell)
        except (TypeError, ValueError):
            raise ValueError(
                f"column {column.name!r}: {str(cell)[:100]!r} is not a number"
            ) from None
    text = "" if blank or is_blank(str(cell)) else _text(cell)
    return float(codes.get(text, -1))


def _text(cell: Any) -> str:
    """A cell as the CSV reader saw it: integral floats print as integers ('3', not '3.0')."""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell).strip()


@dataclass(frozen=True)
class TableEncoder:
    """Imputation medians and seen levels fitted on some rows; :meth:`transform` applies them.

    For numeric column j: x̂ = x if present else median_j, plus 1[x blank] if the column has
    blanks. For categorical column j with levels ℓ₁…ℓ_L: e_i = 1[x = ℓ_i ∧ ℓ_i was seen].
    """

    layout: TableLayout
    medians: np.ndarray  # one per numeric column
    seen: tuple[np.ndarray, ...]  # per categorical column: a bool per level

    def transform(self, raw: np.ndarray) -> np.ndarray:
        parts: list[np.ndarray] = []
        n_numeric = n_categorical = 0
        for j, column in enumerate(self.layout.kept):
            values = raw[:, j]
            if column.kind == "numeric":
                blank = np.isnan(values)
                parts.append(np.where(blank, self.medians[n_numeric], values)[:, None])
                if column.blanks:
                    parts.append(blank[:, None].astype(np.float64))
                n_numeric += 1
            else:
                seen = self.seen[n_categorical]
                levels = np.arange(len(column.levels))
                parts.append(((values[:, None] == levels) & seen[None, :]).astype(np.float64))
                n_categorical += 1
        return np.concatenate(parts, axis=1).astype(np.float32)

    def as_plain(self) -> dict[str, Any]:
        return {
            "layout": self.layout.as_plain(),
            "medians": self.medians.tolist(),
            "seen": [s.tolist() for s in self.seen],
        }

    @classmethod
    def from_plain(cls, value: dict[str, Any]) -> TableEncoder:
        return cls(
            TableLayout.from_plain(value["layout"]),
            np.array(value["medians"], dtype=np.float64),
            tuple(np.array(s, dtype=bool) for s in value["seen"]),
        )


@dataclass(frozen=True)
class Table:
    """A table's raw feature cells (see :meth:`TableLayout.raw`) and its layout."""

    layout: TableLayout
    raw: np.ndarray  # float64 [n, kept columns]

    def fit(self, rows: np.ndarray) -> TableEncoder:
        """The encoder fitted on the table's ``rows`` only (a fold's training part)."""
        return self.layout.fit(self.raw[rows])

    def encode(self, fit: np.ndarray) -> tuple[np.ndarray, TableEncoder]:
        """Every row encoded by the encoder fitted on the ``fit`` rows only."""
        encoder = self.fit(fit)
        return encoder.transform(self.raw), encoder
