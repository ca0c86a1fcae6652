"""The helper process of ``regtune tune``: the data and rows it makes are the ones made here,
its errors are raised in the caller, and it never outlives its answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer import CVProtocol, DatasetError, Prefetch, StudySpec, load_dataset


def same_protocol(a: CVProtocol, b: CVProtocol) -> None:
    np.testing.assert_array_equal(a.pool, b.pool)
    np.testing.assert_array_equal(a.test, b.test)
    for sa, sb in zip(a.splits, b.splits, strict=True):
        for field in ("fit", "val", "score"):
            np.testing.assert_array_equal(getattr(sa, field), getattr(sb, field))


def test_a_builtin_set_and_its_rows_come_back_as_made_here() -> None:
    spec = StudySpec(dataset="builtin:wine", cv={"folds": 3, "test_fraction": 0.25}, seed=7)
    prefetch = Prefetch(spec)
    data = prefetch.dataset()
    assert data is not None and prefetch.process.exitcode == 0  # answered, then reaped
    here = load_dataset("builtin:wine")
    np.testing.assert_array_equal(data.X, here.X)
    np.testing.assert_array_equal(data.y, here.y)
    same_protocol(CVProtocol.of(spec, data, rows=prefetch.rows), CVProtocol.of(spec, here))


def test_a_files_rows_come_back_and_its_data_is_read_by_the_caller(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "points.npz"
    np.savez(path, X=rng.normal(size=(60, 3)).astype(np.float32), y=rng.integers(0, 2, 60))
    spec = StudySpec(dataset=str(path), cv={"folds": 4})
    prefetch = Prefetch(spec)
    assert prefetch.dataset() is None  # not sent through the pipe
    data = load_dataset(str(path))
    same_protocol(CVProtocol.of(spec, data, rows=prefetch.rows), CVProtocol.of(spec, data))


def test_rows_the_data_cannot_give_raise_in_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "rare.npz"
    np.savez(path, X=np.zeros((12, 2), np.float32), y=np.array([0] * 10 + [1] * 2))
    spec = StudySpec(dataset=str(path), cv={"folds": 5})  # class 1 has 2 rows for 5 folds
    prefetch = Prefetch(spec)
    data = load_dataset(str(path))  # the data itself is fine
    with pytest.raises(DatasetError) as raised:
        prefetch.rows()
    with pytest.raises(DatasetError) as here:
        CVProtocol.of(spec, data)
    assert str(raised.value) == str(here.value)
    missing = Prefetch(StudySpec(dataset=str(tmp_path / "none.npz")))
    with pytest.raises(DatasetError, match="neither 'builtin:NAME' nor a readable file"):
        missing.rows()
    assert missing.process.exitcode == 0
