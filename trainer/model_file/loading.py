"""Reading the model file: a path, its bytes or an open file loaded back as the tuned network
(:class:`TunedModel`) or its fold models (:class:`EnsembleModel`), ready to predict::

    from trainer import load_model

    model = load_model("model.pt")
    labels = model.predict(X)  # X: raw rows as uploaded: a DataFrame, a list of dicts, or
                               # [n, n_features] numbers in the training columns' order
    folds = load_model("model.pt", ensemble=True)  # the K fold models, averaged

regtune does not depend on pandas: a DataFrame (which a user's own pandas made) is read as its
records, duck-typed (:meth:`trainer.data.tabular.TableLayout.read`).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from typing import IO, Any, Literal, overload

import numpy as np
import torch
from torch import nn

from trainer.data.datasets import Label
from trainer.data.preprocessing import Standardizer
from trainer.data.tabular import TableEncoder
from trainer.engines.per_trial import predict
from trainer.model_file.model_format import ArtifactError, ModelFile, Preprocessing, as_current
from trainer.nets import networks, plugins
from trainer.specs.study_spec import UNLIMITED, ModelSpec

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]


def read(source: Source) -> ModelFile:
    """The model file from a path, the file's bytes or an open binary file, in the current
    layout (:func:`~trainer.model_file.model_format.as_current`).

    Only ``torch.load(..., weights_only=True)``: tensors and plain values, no pickled code.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(bytes(source))
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # not a torch file, or one that holds more than weights
        raise ArtifactError(f"not a regtune model file: {exc}") from None
    return as_current(loaded)


@dataclass
class TunedModel:
    """A loaded model file: the network in evaluation mode with its preprocessing and metadata."""

    model: nn.Module
    task: str
    metric: str
    classes: list[Label]
    feature_names: list[str]
    input_shape: tuple[int, ...]
    hyperparameters: dict[str, Any]
    scores: dict[str, Any]
    epochs: int
    x_scaler: Standardizer
    y_scaler: Standardizer | None
    encoder: TableEncoder | None = None
    metadata: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def n_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def test_score(self) -> float | None:
        return self.scores.get("test_score")

    def features(self, X: Any) -> torch.Tensor:
        """``X`` encoded and standardized as in training: a table's raw rows (a DataFrame, a
        list of dicts or of rows in :attr:`feature_names` order), or numbers ``[n,
        n_features]`` / ``[n, *input_shape]``."""
        if self.encoder is not None:
            X = self.encoder.transform(self.encoder.layout.read(X))
        X = np.asarray(X, dtype=np.float32)  # the dtype the training rows had
        if X.ndim == 1:  # one feature per row, or one sample
            X = X[:, None] if self.n_features == 1 else X[None]
        if X.ndim == 0:
            raise ValueError(f"X must be [n, {self.n_features}], got a scalar")
        X = X.reshape(len(X), -1)
        if X.shape[1] != self.n_features:
            raise ValueError(
                f"X has {X.shape[1]} features; the model was trained on {self.n_features}"
                + (f" ({', '.join(self.feature_names[:5])}, …)" if self.feature_names else "")
            )
        if not np.isfinite(X).all():
            raise ValueError("X must be finite (no NaN/inf)")
        device = next(iter(self.model.parameters())).device
        return torch.as_tensor(self.x_scaler.transform(X)).to(device)

    def outputs(self, X: Any) -> torch.Tensor:
        """The network's raw outputs (logits, or standardized targets) in evaluation mode."""
        return predict(self.model, self.features(X)).cpu()

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (classification) or values in the target's own units (regression)."""
        out = self.outputs(X)
        if self.task == "classification":
            return np.asarray(self.classes)[out.argmax(1).numpy()]
        assert self.y_scaler is not None
        return self.y_scaler.inverse(out.numpy())[:, 0]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[n, len(classes)]``, columns in the order of ``classes``."""
        if self.task != "classification":
            raise ValueError("predict_proba needs a classification model; use predict")
        return torch.softmax(self.outputs(X), dim=1).numpy()

    def to(self, device: torch.device | str) -> TunedModel:
        self.model.to(device)
        return self


@dataclass
class EnsembleModel:
    """The K fold models of a model file, predicting by their average (see
    :func:`trainer.engines.per_trial.fold_ensemble` for the maths)."""

    members: list[TunedModel]
    test_score: float | None

    @property
    def task(self) -> str:
        return self.members[0].task

    @property
    def classes(self) -> list[Label]:
        return self.members[0].classes

    def predict_proba(self, X: Any) -> np.ndarray:
        """The members' mean class probabilities ``[n, len(classes)]``."""
        return np.mean([member.predict_proba(X) for member in self.members], axis=0)

    def predict(self, X: Any) -> np.ndarray:
        """Class labels of the mean probabilities, or the mean value in the target's units."""
        if self.task == "classification":
            return np.asarray(self.classes)[self.predict_proba(X).argmax(1)]
        return np.mean([member.predict(X) for member in self.members], axis=0)

    def to(self, device: torch.device | str) -> EnsembleModel:
        for member in self.members:
            member.to(device)
        return self


def _metadata(model_file: ModelFile) -> dict[str, Any]:
    """Everything but the weights; of an ensemble, its size and test score."""
    metadata = {k: v for k, v in model_file.items() if k not in ("state_dict", "ensemble")}
    folds = model_file["ensemble"]
    metadata["ensemble"] = (
        {"members": len(folds["members"]), "test_score": folds["test_score"]} if folds else None
    )
    return metadata


def _network(
    model_file: ModelFile,
    state_dict: dict[str, torch.Tensor],
    preprocessing: Preprocessing,
    epochs: int,
    device: torch.device | str,
) -> TunedModel:
    """One network of a model file (the refit or a fold model) with its preprocessing."""
    arch = model_file["architecture"]
    spec = ModelSpec.model_validate(arch["model"], context={"limits": UNLIMITED})
    input_shape = tuple(int(n) for n in arch["input_shape"])
    try:
        model = networks.build(spec, input_shape, int(arch["n_outputs"]), hidden=arch["hidden"])
    except plugins.PluginError as exc:
        network = arch["network"]
        raise ArtifactError(
            f"this model's network is the plugin {spec.name!r} (package "
            f"{network.get('package')} {network.get('version')}); install it to load the "
            f"model: {exc}"
        ) from None

    def dropout(group: str | None) -> float:
        """A group's own p; no group, or one without its own p, takes the network's."""
        p = arch["dropout"] if group is None else arch["groups"].get(group, arch["dropout"])
        return float(p)

    networks.configure(model, dropout=dropout, bn_momentum=float(arch["bn_momentum"]))
    model.load_state_dict(state_dict)
    model.to(device).eval()
    y_mean, y_std = preprocessing["y_mean"], preprocessing["y_std"]
    y_scaler = None
    if y_mean is not None and y_std is not None:
        y_scaler = Standardizer(y_mean.numpy(), y_std.numpy())
    encoder = preprocessing["encoder"]
    return TunedModel(
        model=model,
        task=model_file["task"],
        metric=model_file["metric"],
        classes=list(model_file["classes"]),
        feature_names=list(model_file["feature_names"]),
        input_shape=input_shape,
        hyperparameters=dict(model_file["hyperparameters"]),
        scores=dict(model_file["scores"]),
        epochs=epochs,
        x_scaler=Standardizer(preprocessing["x_mean"].numpy(), preprocessing["x_std"].numpy()),
        y_scaler=y_scaler,
        encoder=None if encoder is None else TableEncoder.from_plain(encoder),
        metadata=_metadata(model_file),
    )


@overload
def load_model(
    source: Source, *, device: torch.device | str = ..., ensemble: Literal[False] = ...
) -> TunedModel: ...
@overload
def load_model(
    source: Source, *, device: torch.device | str = ..., ensemble: Literal[True]
) -> EnsembleModel: ...
def load_model(
    source: Source, *, device: torch.device | str = "cpu", ensemble: bool = False
) -> TunedModel | EnsembleModel:
    """Rebuild the tuned network from a model file (a path, its bytes or a binary file); with
    ``ensemble``, its K fold models instead (a file stored with ``final_model.ensemble``).

    :class:`ArtifactError` for a file that is no regtune model, or of a newer format than
    this regtune reads (older formats are read).
    """
    model_file = read(source)
    if not ensemble:
        return _network(
            model_file,
            model_file["state_dict"],
            model_file["preprocessing"],
            model_file["epochs"],
            device,
        )
    folds = model_file["ensemble"]
    if not folds:
        raise ArtifactError(
            model_file["ensemble_error"]
            or "this model file holds no fold ensemble: submit the study with "
            '"final_model": {"ensemble": true} to store one'
        )
    members = [
        _network(model_file, member["state_dict"], member, member["epochs"], device)
        for member in folds["members"]
    ]
    return EnsembleModel(members, folds["test_score"])
