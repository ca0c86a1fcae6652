"""The tuned model as a file: pack a refitted network, and load it back for prediction.

An artifact is a plain dict of tensors and Python values (str, int, float, bool, None, lists,
dicts) written by ``torch.save``, so ``torch.load(path, weights_only=True)`` reads it without
unpickling any class::

    format, version      "regtune-model", 1
    state_dict           the network's weights and BatchNorm buffers (CPU tensors)
    architecture         model (ModelSpec as JSON), hidden, dropout, groups (a dropout
                         group's own p), bn_momentum, input_shape, n_outputs: enough for
                         trainer.nets.networks.build; network: what the network is (for a
                         plugin its name, options, package and version)
    preprocessing        encoder (a CSV table's encoding: its columns' treatments, the
                         imputation medians and the levels seen in training, as plain values;
                         None for numeric arrays), x_mean, x_std (tensors: z = (x − mean) / std
                         of the encoded features, fitted on the training rows), y_mean, y_std
                         (regression: predictions are z·std + mean)
    task, metric         "classification" | "regression"; "accuracy" | "mse" | "loss"
    classes              class labels in output order, of the target's own type (ints stay
                         ints), else []
    feature_names        the columns a row must have, in order: a table's raw columns (its
                         dropped ones left out), else the features' names ([] if unknown)
    encoded_feature_names  the network's inputs: a table's encoded columns ("colour=red",
                         "age (missing)"), else feature_names
    hyperparameters      the best trial's resolved configuration (TrialConfig.hyperparameters)
    training             the TrainingSpec it was retrained with (as JSON)
    epochs, train_loss   the refit's epoch count and training-loss curve
    scores               cv_mean, cv_std, fold_scores (the best trial's CV), test_score
                         (None without a held-out test split), n_train, n_test
    trial, study         the best trial's number and params; free metadata from the caller
    ensemble             None, or (spec ``final_model.ensemble``) the K fold models:
                         members (each: state_dict, x_mean, x_std, y_mean, y_std, epochs:
                         its own fit rows' standardization) and test_score, the score of
                         their averaged prediction on the test rows
    ensemble_error       why an ensemble that was asked for is missing (a fold diverged when
                         retrained), else None or absent

Loading::

    from trainer.model_file.artifact import load_model

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Literal, overload

import numpy as np
import torch
from torch import nn

from trainer.data.datasets import Dataset, Label
from trainer.data.preprocessing import Standardizer
from trainer.data.tabular import TableEncoder
from trainer.engines.per_trial import FittedModel, FoldEnsemble, predict
from trainer.nets import networks, plugins
from trainer.specs.study_spec import UNLIMITED, ModelSpec

FORMAT = "regtune-model"
VERSION = 1
# A stored architecture was checked against the operator's limits when it was trained; a
# file is rebuilt whatever the default limits are.


class ArtifactError(ValueError):
    """The file is not a regtune model (or one of a newer format than this code reads)."""


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays and tuples turned into what weights_only reads."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | bool | int | float | torch.Tensor):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a model artifact")


def _tensor(values: np.ndarray) -> torch.Tensor:
    """A numpy array as a CPU tensor of the same dtype (so that predictions are bit-equal)."""
    return torch.from_numpy(np.array(values, copy=True))


def _weights(fitted: FittedModel) -> dict[str, torch.Tensor]:
    return {name: t.detach().cpu().clone() for name, t in fitted.model.state_dict().items()}


def _preprocessing(fitted: FittedModel) -> dict[str, Any]:
    y = fitted.y_scaler
    return {
        "encoder": None if fitted.encoder is None else _plain(fitted.encoder.as_plain()),
        "x_mean": _tensor(fitted.x_scaler.mean),
        "x_std": _tensor(fitted.x_scaler.std),
        "y_mean": None if y is None else _tensor(y.mean),
        "y_std": None if y is None else _tensor(y.std),
    }


def pack(
    fitted: FittedModel,
    dataset: Dataset,
    *,
    metric: str,
    n_train: int,
    n_test: int,
    cv: Mapping[str, Any] | None = None,
    trial: Mapping[str, Any] | None = None,
    study: Mapping[str, Any] | None = None,
    ensemble: FoldEnsemble | None = None,
    ensemble_error: str | None = None,
) -> dict[str, Any]:
    """The artifact of ``fitted`` (a refit on ``dataset``): see the module docstring.

    ``cv`` holds the best trial's ``cv_mean``, ``cv_std`` and ``fold_scores``; ``trial`` its
    ``number`` and ``params``; ``study`` any further JSON-ready metadata (id, name, seed);
    ``ensemble`` the same configuration's fold models, or ``ensemble_error`` why they are
    missing.
    """
    config = fitted.config
    cv = cv or {}
    return {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": _weights(fitted),
        "architecture": {
            "model": config.model.model_dump(mode="json"),
            "hidden": list(config.hidden),
            "dropout": float(config.dropout),
            "groups": {group: float(p) for group, p in config.groups},
            "bn_momentum": float(config.bn_momentum),
            "network": _plain(networks.describe(config.model)),
            "input_shape": [int(n) for n in dataset.input_shape],
            "n_outputs": int(dataset.n_outputs),
        },
        "preprocessing": _preprocessing(fitted),
        "task": dataset.task,
        "metric": metric,
        "classes": list(dataset.classes),
        "feature_names": list(
            dataset.table.layout.raw_names if dataset.table else dataset.feature_names
        ),
        "encoded_feature_names": list(dataset.feature_names),
        "hyperparameters": _plain(config.hyperparameters()),
        "training": config.training.model_dump(mode="json"),
        "epochs": int(fitted.epochs),
        "train_loss": [float(v) for v in fitted.train_loss],
        "scores": {
            "cv_mean": _plain(cv.get("cv_mean")),
            "cv_std": _plain(cv.get("cv_std")),
            "fold_scores": _plain(list(cv.get("fold_scores") or [])),
            "test_score": None if fitted.test_score is None else float(fitted.test_score),
            "n_train": int(n_train),
            "n_test": int(n_test),
        },
        "trial": _plain(dict(trial or {})),
        "study": _plain(dict(study or {})),
        "ensemble": None
        if ensemble is None
        else {
            "members": [
                {"state_dict": _weights(m), **_preprocessing(m), "epochs": int(m.epochs)}
                for m in ensemble.members
            ],
            "test_score": _plain(ensemble.test_score),
        },
        "ensemble_error": ensemble_error,
    }


def to_bytes(artifact: Mapping[str, Any]) -> bytes:
    """The artifact as ``torch.save`` writes it (what ``GET /v1/studies/{id}/model`` serves)."""
    buffer = io.BytesIO()
    torch.save(dict(artifact), buffer)
    return buffer.getvalue()


Source = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]


def read(source: Source) -> dict[str, Any]:
    """The artifact dict from a path, the file's bytes or an open binary file.

    Only ``torch.load(..., weights_only=True)``: tensors and plain values, no pickled code.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(bytes(source))
    try:
        artifact = torch.load(source, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # not a torch file, or one that holds more than weights
        raise ArtifactError(f"not a regtune model file: {exc}") from None
    if not isinstance(artifact, dict) or artifact.get("format") != FORMAT:
        raise ArtifactError("not a regtune model file (no 'format': 'regtune-model')")
    if not isinstance(artifact.get("version"), int) or artifact["version"] > VERSION:
        raise ArtifactError(
            f"model file version {artifact.get('version')!r}; this regtune reads up to {VERSION}"
        )
    return artifact


@dataclass
class TunedModel:
    """A loaded artifact: the network in evaluation mode with its preprocessing and metadata."""

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
    """The K fold models of an artifact, predicting by their average (see
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


def _metadata(artifact: Mapping[str, Any]) -> dict[str, Any]:
    """Everything but the weights; of an ensemble, its size and test score."""
    metadata = {k: v for k, v in artifact.items() if k not in ("state_dict", "ensemble")}
    folds = artifact.get("ensemble")
    metadata["ensemble"] = (
        {"members": len(folds["members"]), "test_score": folds["test_score"]} if folds else None
    )
    return metadata


def _network(
    artifact: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    preprocessing: Mapping[str, Any],  # tensors, and a table's encoder as plain values
    epochs: int,
    device: torch.device | str,
) -> TunedModel:
    """One network of an artifact (the refit or a fold model) with its preprocessing."""
    arch = artifact["architecture"]
    spec = ModelSpec.model_validate(arch["model"], context={"limits": UNLIMITED})
    input_shape = tuple(int(n) for n in arch["input_shape"])
    try:
        model = networks.build(spec, input_shape, int(arch["n_outputs"]), hidden=arch["hidden"])
    except plugins.PluginError as exc:
        network = arch.get("network") or {}
        raise ArtifactError(
            f"this model's network is the plugin {spec.name!r} (package "
            f"{network.get('package')} {network.get('version')}); install it to load the "
            f"model: {exc}"
        ) from None
    groups = dict(arch.get("groups") or {})  # absent in files from before dropout groups
    networks.configure(
        model,
        dropout=lambda group: float(groups.get(group, arch["dropout"])),
        bn_momentum=float(arch["bn_momentum"]),
    )
    model.load_state_dict(state_dict)
    model.to(device).eval()
    y_mean, y_std = preprocessing.get("y_mean"), preprocessing.get("y_std")
    y_scaler = None
    if y_mean is not None and y_std is not None:
        y_scaler = Standardizer(y_mean.numpy(), y_std.numpy())
    x_mean, x_std = preprocessing["x_mean"], preprocessing["x_std"]
    assert x_mean is not None and x_std is not None
    encoder = preprocessing.get("encoder")  # absent in files from before tables
    return TunedModel(
        model=model,
        task=artifact["task"],
        metric=artifact["metric"],
        classes=list(artifact["classes"]),
        feature_names=list(artifact["feature_names"]),
        input_shape=input_shape,
        hyperparameters=dict(artifact["hyperparameters"]),
        scores=dict(artifact["scores"]),
        epochs=epochs,
        x_scaler=Standardizer(x_mean.numpy(), x_std.numpy()),
        y_scaler=y_scaler,
        encoder=None if encoder is None else TableEncoder.from_plain(encoder),
        metadata=_metadata(artifact),
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
    """Rebuild the tuned network from an artifact (a path, its bytes or a binary file); with
    ``ensemble``, its K fold models instead (a file stored with ``final_model.ensemble``)."""
    artifact = read(source)
    if not ensemble:
        return _network(
            artifact, artifact["state_dict"], artifact["preprocessing"], artifact["epochs"], device
        )
    folds = artifact.get("ensemble")
    if not folds:
        raise ArtifactError(
            artifact.get("ensemble_error")
            or "this model file holds no fold ensemble: submit the study with "
            '"final_model": {"ensemble": true} to store one'
        )
    members = [
        _network(artifact, member["state_dict"], member, int(member["epochs"]), device)
        for member in folds["members"]
    ]
    return EnsembleModel(members, folds["test_score"])
