"""NPZ files as image and signal sets are saved, ``X`` ``[n, *input_shape]``: read by
``load_npz``, uploaded over HTTP and tuned by ``regtune tune``, where convolutions train on them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from servers import problem, serving, tiny_study, tune_json, wait_status

from trainer.data.builtin_sets import load_builtin
from trainer.data.datasets import DatasetError
from trainer.data.readers import load_npz
from trainer.model_file.loading import load_model


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def digit_images(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` digits as 8×8 one-channel images, ``[n, 1, 8, 8]``."""
    digits = load_builtin("builtin:digits")
    return digits.X[:n].reshape(n, 1, 8, 8), digits.y[:n]


def test_the_shape_of_each_sample_comes_from_x() -> None:
    X, y = digit_images(40)
    data = load_npz(npz(X=X, y=y))
    assert data.input_shape == (1, 8, 8) and data.n_features == 64
    assert np.array_equal(data.X, X.reshape(40, 64))  # row-major: the sample's own pixels
    signals = load_npz(npz(X=np.zeros((6, 2, 5)), y=np.arange(6) % 2))
    assert signals.input_shape == (2, 5) and signals.X.shape == (6, 10)
    # An input_shape beside it must agree; a flat X takes any shape of its width, as before.
    agreed = load_npz(npz(X=X, y=y, input_shape=np.array([1, 8, 8])))
    assert agreed.input_shape == (1, 8, 8)
    flat = load_npz(npz(X=X.reshape(40, 64), y=y, input_shape=np.array([1, 8, 8])))
    assert np.array_equal(flat.X, data.X) and flat.input_shape == data.input_shape
    with pytest.raises(
        DatasetError,
        match=r"input_shape \(64,\) disagrees with the shape of each sample in X \(1, 8, 8\) "
        r"\(X is \(40, 1, 8, 8\)\): leave input_shape out, or give \(1, 8, 8\)",
    ):
        load_npz(npz(X=X, y=y, input_shape=np.array([64])))
    with pytest.raises(DatasetError, match="9 axes per sample; the limit is 8"):
        load_npz(npz(X=np.zeros((4,) + (1,) * 9), y=np.arange(4) % 2))


@pytest.mark.slow
def test_tune_trains_a_cnn_on_an_image_npz(tmp_path: Path) -> None:
    """``regtune tune --dataset images.npz``: the CNN template sees 1×8×8 images, and the model
    file it writes predicts images as they were saved."""
    X, y = digit_images()
    (tmp_path / "images.npz").write_bytes(npz(X=X, y=y))
    spec = tiny_study(
        n_trials=2,
        model={"kind": "cnn", "channels": [4], "kernel_size": 3, "stride": 1, "hidden": [8]},
        training={"max_epochs": 3},
        cv={"folds": 2, "test_fraction": 0.2},
    )
    result = tune_json(tmp_path, spec, "--dataset", "images.npz", "--output", "model.pt")
    assert result["trials"] == {"complete": 2}, result
    model = load_model(tmp_path / "model.pt")
    assert model.input_shape == (1, 8, 8)
    assert model.metadata["architecture"]["network"]["kind"] == "cnn"
    assert model.predict(X[:5]).shape == (5,)


@pytest.mark.slow
def test_an_image_npz_uploads_and_a_conv_stack_trains_on_it(tmp_path: Path) -> None:
    """Over real HTTP, with a worker: the upload's shape is X's own (an input_shape that
    disagrees is a 422 naming it), and a ``layers`` study with 2-D convolutions completes."""
    X, y = digit_images()
    url = f"sqlite:///{tmp_path / 'regtune.db'}"
    with (
        serving(url, tmp_path / "serve.log", workers=1) as server,
        server.client() as http,
    ):
        refused = http.post(
            "/v1/datasets",
            files={"file": ("bad.npz", npz(X=X, y=y, input_shape=np.array([8, 8])))},
        )
        assert refused.status_code == 422, refused.text
        assert problem(refused) == (
            "body.file: input_shape (8, 8) disagrees with the shape of each sample in X "
            "(1, 8, 8) (X is (300, 1, 8, 8)): leave input_shape out, or give (1, 8, 8)"
        )
        created = http.post("/v1/datasets", files={"file": ("images.npz", npz(X=X, y=y))})
        assert created.status_code == 201, created.text
        stored = created.json()
        assert stored["input_shape"] == [1, 8, 8] and stored["n_features"] == 64
        assert stored["n_samples"] == 300 and stored["classes"] == list(range(10))

        layers = [
            {"type": "conv2d", "out": 4, "kernel": 3},
            {"type": "relu"},
            {"type": "maxpool2d", "kernel": 2},
            {"type": "flatten"},
            {"type": "dropout"},
            {"type": "linear"},
        ]
        spec = tiny_study(
            dataset=stored["id"],
            n_trials=2,
            model={"kind": "layers", "layers": layers},
            training={"max_epochs": 3},
            cv={"folds": 2},
        )
        study = http.post("/v1/studies", json=spec)
        assert study.status_code == 201, study.text
        body = wait_status(http, study.json()["id"], ("completed", "failed"))
        assert body["status"] == "completed", body
        assert body["trials"]["complete"] == 2 and body["best"]["value"] > 0
