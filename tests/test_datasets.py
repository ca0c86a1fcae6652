"""Built-in datasets and user uploads: shapes, tasks and errors a user can act on."""

from __future__ import annotations

import io

import numpy as np
import pytest

from trainer.data.builtin_sets import load_builtin
from trainer.data.datasets import DatasetError, check_for_cv, make_dataset
from trainer.data.mnist1d import make_mnist1d
from trainer.data.readers import load_csv, load_dataset, load_npz


@pytest.mark.parametrize(
    ("ref", "n", "d", "task", "classes", "shape"),
    [
        ("builtin:digits", 1797, 64, "classification", 10, (1, 8, 8)),
        ("builtin:breast_cancer", 569, 30, "classification", 2, (30,)),
        ("builtin:wine", 178, 13, "classification", 3, (13,)),
        ("builtin:diabetes", 442, 10, "regression", 0, (10,)),
        ("builtin:poly", 200, 20, "regression", 0, (20,)),
        ("builtin:mnist1d:500", 500, 40, "classification", 10, (1, 40)),
    ],
)
def test_builtins(ref: str, n: int, d: int, task: str, classes: int, shape: tuple) -> None:
    data = load_builtin(ref)
    assert data.X.shape == (n, d) and data.X.dtype == np.float32
    assert data.task == task and len(data.classes) == classes and data.input_shape == shape
    if task == "classification":
        assert data.y.dtype == np.int64 and set(np.unique(data.y)) == set(range(classes))


def test_mnist1d_is_balanced_deterministic_and_not_trivial() -> None:
    X, y = make_mnist1d(1000, seed=3)
    assert X.shape == (1000, 40) and np.all(np.bincount(y) == 100)
    X2, y2 = make_mnist1d(1000, seed=3)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    # Translation and noise make raw class means overlap: nearest-class-mean is far from perfect.
    means = np.stack([X[y == c].mean(0) for c in range(10)])
    nearest = np.argmin(((X[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert 0.15 < (nearest == y).mean() < 0.8


def test_poly_is_the_weight_decay_demonstration() -> None:
    data = load_builtin("builtin:poly")
    x = data.X[:, 1]
    np.testing.assert_allclose(data.X[:, 0], 1.0)
    np.testing.assert_allclose(data.X[:, 3], x**3 / 6, rtol=1e-5, atol=1e-6)
    clean = 5 + 1.2 * x - 3.4 * x**2 / 2 + 5.6 * x**3 / 6
    assert 0.07 < np.std(data.y - clean) < 0.13  # noise σ = 0.1


def test_unknown_builtin_names_the_choices() -> None:
    with pytest.raises(DatasetError, match=r"unknown built-in dataset 'mnist'.*digits"):
        load_builtin("builtin:mnist")
    with pytest.raises(DatasetError, match="only builtin:mnist1d takes a size"):
        load_builtin("builtin:wine:50")
    with pytest.raises(DatasetError, match="mnist1d size"):
        load_builtin("builtin:mnist1d:lots")


def test_csv_with_string_labels_maps_them_to_ids() -> None:
    text = b"a,b,label\n1,2,cat\n3,4,dog\n5,6,cat\n7,8,bird\n"
    data = load_csv(text, "label")
    assert data.classes == ("bird", "cat", "dog")
    assert data.y.tolist() == [1, 2, 1, 0]
    assert data.feature_names == ("a", "b") and data.X.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]


def test_csv_numeric_targets_infer_the_task() -> None:
    assert load_csv(b"x,y\n1,0\n2,1\n3,0\n", "y").task == "classification"
    assert load_csv(b"x,y\n1,0.5\n2,1.25\n3,0.1\n", "y").task == "regression"
    assert load_csv(b"x,y\n1,0\n2,1\n3,2\n", "y", task="regression").task == "regression"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"a,b,y\n1,2,0\n3,inf,1\n", "line 3, column 'b': 'inf' is not finite"),
        (b"a,b,y\n1,2,0\n3,4\n", "line 3 has 2 fields, the header has 3"),
        (b"a,b\n1,2\n", "target column 'y' not in the CSV header"),
        (b"a,b,y\n1,,0\n2,NA,1\n", "column 'b' is blank in every row; remove it"),
        (b"a,y\n1,0\n2,\n3,1\n", "target column 'y' is blank in 1 of 3 rows (CSV lines 3)"),
        (b"a,y\n1,0\n2,0\n", "at least 2 classes"),
        (b"a,y\n", "header row and at least one data row"),
        (b"a,y\n1,cat\n2,dog\n", None),
    ],
)
def test_csv_errors_say_what_to_fix(text: bytes, message: str | None) -> None:
    if message is None:
        load_csv(text, "y")
        return
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_csv(text, "y")


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_npz_roundtrip_with_spatial_shape() -> None:
    X = np.random.default_rng(0).normal(size=(20, 12))
    y = np.arange(20) % 2
    data = load_npz(npz(X=X, y=y, input_shape=np.array([3, 4])))
    assert data.input_shape == (3, 4) and data.n_features == 12 and data.n_outputs == 2


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.zeros((4, 2))}, r"lacks array\(s\) \['y'\]"),
        ({"X": np.zeros(4), "y": np.arange(4) % 2}, r"\[samples, features\] or"),
        (
            {"X": np.zeros((4, 2, 2)), "y": np.arange(4) % 2, "input_shape": np.array([4])},
            r"input_shape \(4,\) disagrees with the shape of each sample in X \(2, 2\)",
        ),
        ({"X": np.zeros((4, 2)), "y": np.zeros(3)}, "4 rows but the target has 3"),
        ({"X": np.array([[1.0], [np.inf]]), "y": np.array([0, 1])}, "finite"),
        (
            {"X": np.zeros((4, 3)), "y": np.arange(4) % 2, "input_shape": np.array([2, 2])},
            "does not hold 3",
        ),
        ({"X": np.array([[object()], [1]], dtype=object), "y": np.array([0, 1])}, "readable NPZ"),
    ],
)
def test_npz_errors(arrays: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_npz(npz(**arrays))


def test_not_an_npz_file() -> None:
    with pytest.raises(DatasetError, match="readable NPZ"):
        load_npz(b"definitely not a zip archive")


def test_cv_needs_enough_samples_per_class() -> None:
    y = np.array([0] * 10 + [1] * 4)
    data = make_dataset("small", np.zeros((14, 1)), y)
    check_for_cv(data, folds=4)
    with pytest.raises(
        DatasetError, match="class 1 has 4 samples; 5-fold stratified CV needs at least 5"
    ):
        check_for_cv(data, folds=5)
    with pytest.raises(DatasetError, match=r"with test_fraction 0\.5 needs at least 8"):
        check_for_cv(data, folds=4, test_fraction=0.5)


def test_load_dataset_from_paths(tmp_path) -> None:
    (tmp_path / "d.csv").write_bytes(b"a,t\n1,0\n2,1\n")
    assert load_dataset(str(tmp_path / "d.csv"), target="t").n_samples == 2
    with pytest.raises(DatasetError, match="needs the name of its target column"):
        load_dataset(str(tmp_path / "d.csv"))
    with pytest.raises(DatasetError, match="neither 'builtin:NAME' nor a readable file"):
        load_dataset("nope.csv")
