"""Writing the model file: a refitted network (and its fold ensemble) packed as a
:class:`~trainer.model_file.model_format.ModelFile`, and that as ``torch.save`` bytes."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from trainer.data.datasets import Dataset
from trainer.engines.results import FittedModel, FoldEnsemble
from trainer.model_file.model_format import (
    FORMAT,
    FORMAT_VERSION,
    LEGACY_VERSION,
    Architecture,
    Ensemble,
    Member,
    ModelFile,
    Preprocessing,
    Scores,
)
from trainer.nets import networks


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


def _preprocessing(fitted: FittedModel) -> Preprocessing:
    y = fitted.y_scaler
    return Preprocessing(
        encoder=None if fitted.encoder is None else _plain(fitted.encoder.as_plain()),
        x_mean=_tensor(fitted.x_scaler.mean),
        x_std=_tensor(fitted.x_scaler.std),
        y_mean=None if y is None else _tensor(y.mean),
        y_std=None if y is None else _tensor(y.std),
    )


def _ensemble(ensemble: FoldEnsemble) -> Ensemble:
    return Ensemble(
        members=[
            Member(state_dict=_weights(m), **_preprocessing(m), epochs=int(m.epochs))
            for m in ensemble.members
        ],
        test_score=_plain(ensemble.test_score),
    )


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
) -> ModelFile:
    """The model file of ``fitted`` (a refit on ``dataset``): see
    :mod:`trainer.model_file.model_format`.

    ``cv`` holds the best trial's ``cv_mean``, ``cv_std`` and ``fold_scores``; ``trial`` its
    ``number`` and ``params``; ``study`` any further JSON-ready metadata (id, name, seed);
    ``ensemble`` the same configuration's fold models, or ``ensemble_error`` why they are
    missing.
    """
    config = fitted.config
    cv = cv or {}
    # The network as trained: narrowed by the trial's width, if it has one.
    model, hidden = config.architecture(dataset.input_shape, dataset.n_outputs)
    return ModelFile(
        format=FORMAT,
        version=LEGACY_VERSION,
        format_version=FORMAT_VERSION,
        state_dict=_weights(fitted),
        architecture=Architecture(
            model=model.model_dump(mode="json"),
            hidden=list(hidden),
            dropout=float(config.dropout),
            groups={group: float(p) for group, p in config.groups},
            bn_momentum=float(config.bn_momentum),
            network=_plain(networks.describe(model)),
            input_shape=[int(n) for n in dataset.input_shape],
            n_outputs=int(dataset.n_outputs),
        ),
        preprocessing=_preprocessing(fitted),
        task=dataset.task,
        metric=metric,
        classes=list(dataset.classes),
        feature_names=list(
            dataset.table.layout.raw_names if dataset.table else dataset.feature_names
        ),
        encoded_feature_names=list(dataset.feature_names),
        hyperparameters=_plain(config.hyperparameters()),
        training=config.training.model_dump(mode="json"),
        epochs=int(fitted.epochs),
        train_loss=[float(v) for v in fitted.train_loss],
        scores=Scores(
            cv_mean=_plain(cv.get("cv_mean")),
            cv_std=_plain(cv.get("cv_std")),
            fold_scores=_plain(list(cv.get("fold_scores") or [])),
            test_score=None if fitted.test_score is None else float(fitted.test_score),
            n_train=int(n_train),
            n_test=int(n_test),
        ),
        trial=_plain(dict(trial or {})),
        study=_plain(dict(study or {})),
        ensemble=None if ensemble is None else _ensemble(ensemble),
        ensemble_error=ensemble_error,
    )


def to_bytes(model_file: ModelFile) -> bytes:
    """The file as ``torch.save`` writes it (what ``GET /v1/studies/{id}/model`` serves)."""
    buffer = io.BytesIO()
    torch.save(dict(model_file), buffer)
    return buffer.getvalue()
