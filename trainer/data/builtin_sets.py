"""The built-in datasets: four of scikit-learn's and two generated (MNIST-1D, poly)."""

from __future__ import annotations

from trainer.data.datasets import Dataset, DatasetError, make_dataset
from trainer.data.mnist1d import make_mnist1d
from trainer.data.poly import make_poly
from trainer.specs.study_spec import Task

BUILTINS = ("digits", "breast_cancer", "wine", "diabetes", "mnist1d", "poly")
MNIST1D_DEFAULT_SIZE = 5_000
MNIST1D_MAX_SIZE = 200_000


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
    from sklearn import datasets as skdatasets  # a second to import: only where it is needed

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
