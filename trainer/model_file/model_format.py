"""The model file's format: one typed definition that the writer (:mod:`.packing`) fills and the
reader (:mod:`.loading`) reads, its versions, and the upgrade of older files to it.

A model file is a plain dict of tensors and Python values (str, int, float, bool, None, lists,
dicts) written by ``torch.save``, so ``torch.load(path, weights_only=True)`` reads it without
unpickling any class. :class:`ModelFile` is that dict, format version 2::

    format               "regtune-model"
    version              1, whatever the format version: what readers from before
                         format_version check (see below)
    format_version       the layout's version (FORMAT_VERSION, 2)
    state_dict           the network's weights and BatchNorm buffers (CPU tensors)
    architecture         model (ModelSpec as JSON), hidden, dropout, groups (a dropout
                         group's own p), bn_momentum, input_shape, n_outputs: enough for
                         trainer.nets.networks.build; network: what the network is (for a
                         plugin its name, options, package and version)
    preprocessing        encoder (a CSV table's encoding: its columns' treatments, the
                         imputation medians and the levels seen in training, as plain values;
                         None for numeric arrays), x_mean, x_std (tensors: z = (x − mean) / std
                         of the encoded features, fitted on the training rows), y_mean, y_std
                         (regression: predictions are z·std + mean; else None)
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
                         members (each: state_dict, the preprocessing keys of its own fit
                         rows, epochs) and test_score, the score of their averaged prediction
                         on the test rows
    ensemble_error       why an ensemble that was asked for is missing (a fold diverged when
                         retrained), else None

The versions::

    1   regtune up to commit 4cb3553: the layout above without format_version. Files written
        before regtune stored dropout groups, plugins, tables and fold ensembles also lack
        architecture.groups and .network, preprocessing.encoder, encoded_feature_names,
        ensemble and ensemble_error.
    2   format_version added (the rest as in version 1).

A file says its version in ``format_version``; a file without it is version 1. This regtune
refuses a newer file (:class:`ArtifactError`: upgrade regtune) and brings an older one to the
current layout (:func:`as_current`), so that past that function the code knows one layout.

``version`` is what the readers of version 1, which know no format_version, check: they refuse
a file whose ``version`` is above 1. It stays 1 while they can read the file (version 2 only
added a key, which they ignore); a format that they would misread must write more there, so
that they refuse it instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict, cast

import torch

from trainer.data.datasets import Label

FORMAT = "regtune-model"
FORMAT_VERSION = 2
# The ``version`` key: files that readers from before format_version can read (see above).
LEGACY_VERSION = 1


class ArtifactError(ValueError):
    """The file is not a regtune model, or one of a newer format than this regtune reads."""


class Architecture(TypedDict):
    """Enough to rebuild the network (trainer.nets.networks.build and configure)."""

    model: dict[str, Any]  # the ModelSpec, as JSON
    hidden: list[int]
    dropout: float
    groups: dict[str, float]  # a dropout group's own p; the others take ``dropout``
    bn_momentum: float
    network: dict[str, Any]  # networks.describe: for a plugin, its package and version
    input_shape: list[int]
    n_outputs: int


class Preprocessing(TypedDict):
    """What turns raw rows into the network's inputs, and its outputs into targets."""

    encoder: dict[str, Any] | None  # TableEncoder.as_plain(); None for numeric arrays
    x_mean: torch.Tensor
    x_std: torch.Tensor
    y_mean: torch.Tensor | None  # regression only
    y_std: torch.Tensor | None


class Member(Preprocessing):
    """One fold model of the ensemble, standardized on its own fit rows."""

    state_dict: dict[str, torch.Tensor]
    epochs: int


class Ensemble(TypedDict):
    members: list[Member]
    test_score: float | None  # of the members' averaged prediction


class Scores(TypedDict):
    cv_mean: float | None
    cv_std: float | None
    fold_scores: list[float]
    test_score: float | None
    n_train: int
    n_test: int


class ModelFile(TypedDict):
    """The whole file, format version :data:`FORMAT_VERSION` (the keys: the module docstring)."""

    format: str
    version: int
    format_version: int
    state_dict: dict[str, torch.Tensor]
    architecture: Architecture
    preprocessing: Preprocessing
    task: str
    metric: str
    classes: list[Label]
    feature_names: list[str]
    encoded_feature_names: list[str]
    hyperparameters: dict[str, Any]
    training: dict[str, Any]
    epochs: int
    train_loss: list[float]
    scores: Scores
    trial: dict[str, Any]
    study: dict[str, Any]
    ensemble: Ensemble | None
    ensemble_error: str | None


def upgrade_from_1(file: dict[str, Any]) -> dict[str, Any]:
    """A version-1 file in the version-2 layout.

    Version 2 only added ``format_version``. The keys that older version-1 files lack say
    what their absence meant: no dropout group with its own p, no description of the network
    (there were no plugins), numeric inputs (no table encoder, the encoded features are the
    features), no ensemble asked for.
    """
    return {
        "encoded_feature_names": file["feature_names"],
        "ensemble": None,
        "ensemble_error": None,
        **file,
        "architecture": {"groups": {}, "network": {}, **file["architecture"]},
        "preprocessing": {"encoder": None, **file["preprocessing"]},
        "format_version": 2,
    }


# Version n's upgrade to n + 1, applied in turn up to FORMAT_VERSION.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: upgrade_from_1}


def as_current(file: object) -> ModelFile:
    """``file`` (what torch.load read) in the current layout, older versions upgraded.

    :class:`ArtifactError` if it is no regtune model file, or one of a newer format.
    """
    if not isinstance(file, dict) or file.get("format") != FORMAT:
        raise ArtifactError(f"not a regtune model file (no 'format': {FORMAT!r})")
    version = file.get("format_version", file.get("version"))  # see the module docstring
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"not a regtune model file: format version {version!r}")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"this model file is format version {version}, newer than this regtune reads "
            f"(format version {FORMAT_VERSION} and older): upgrade regtune to load it"
        )
    for older in range(version, FORMAT_VERSION):
        file = UPGRADES[older](file)
    return cast(ModelFile, file)
