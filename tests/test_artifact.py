"""The tuned model's file (trainer.model_file): a weights-only round trip that predicts exactly
as the model in memory did, with its preprocessing, labels and scores."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from servers import tiny_study

from trainer.data.datasets import Dataset, make_dataset
from trainer.data.readers import load_csv
from trainer.engines.per_trial import predict
from trainer.engines.results import DivergedError, FittedModel
from trainer.engines.trial_config import TrialConfig
from trainer.model_file import packing
from trainer.model_file.loading import load_model, read
from trainer.model_file.model_format import FORMAT_VERSION, ArtifactError, ModelFile
from trainer.specs.study_spec import StudySpec
from trainer.tuning import tuned_model as tuned_model_module
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.refit import refit
from trainer.tuning.study import run_study
from trainer.tuning.tuned_model import final_model, refit_epochs

# A model file of format version 1, written by the regtune of its day
# (tests/data/write_model_v1.py), and what that regtune predicted from it (model_v1.json).
V1_FILE = Path(__file__).parent / "data" / "model_v1.pt"
V1_PREDICTIONS = V1_FILE.with_suffix(".json")
BASE = {"weight_decay": 1e-4, "l1": 1e-6, "dropout": 0.1, "bn_momentum": 0.2, "patience": 3}


def fit(dataset: Dataset, spec: StudySpec, epochs: int = 5) -> tuple[FittedModel, CVProtocol]:
    protocol = CVProtocol.of(spec, dataset)
    config = TrialConfig.from_values(spec, BASE)
    fitted = refit(
        dataset, config, protocol.pool, protocol.test, metric=protocol.metric, epochs=epochs
    )
    return fitted, protocol


def packed(fitted: FittedModel, dataset: Dataset, protocol: CVProtocol) -> dict[str, Any]:
    return packing.pack(
        fitted,
        dataset,
        metric=protocol.metric,
        n_train=len(protocol.pool),
        n_test=len(protocol.test),
        cv={"cv_mean": 0.9, "cv_std": np.float64(0.01), "fold_scores": [0.89, 0.91]},
        trial={"number": 3, "params": {"dropout": 0.1}},
        study={"id": "abc"},
    )


class Payload:
    """A pickled object in a file: weights_only refuses to build it."""


def in_memory_outputs(fitted: FittedModel, X: np.ndarray) -> torch.Tensor:
    return predict(fitted.model, torch.as_tensor(fitted.x_scaler.transform(X)))


def plain_values_only(value: Any) -> None:
    """What weights_only promises: tensors and Python's own plain types, nothing else."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            plain_values_only(item)
    elif isinstance(value, list):
        for item in value:
            plain_values_only(item)
    else:
        assert value is None or type(value) in (str, int, float, bool, torch.Tensor), type(value)


def test_a_classifier_round_trips_through_a_weights_only_file(wine, tmp_path) -> None:
    spec = StudySpec(
        dataset="builtin:wine", model={"hidden": [16, 8]}, cv={"folds": 3, "test_fraction": 0.25}
    )
    fitted, protocol = fit(wine, spec)
    path = tmp_path / "model.pt"
    path.write_bytes(packing.to_bytes(packed(fitted, wine, protocol)))

    raw = torch.load(path, weights_only=True)  # no class is unpickled
    plain_values_only(raw)
    assert raw["format"] == "regtune-model" and raw["version"] == 1
    assert raw["task"] == "classification" and raw["classes"] == [0, 1, 2]  # ints stay ints
    assert raw["feature_names"] == list(wine.feature_names)
    assert raw["architecture"]["hidden"] == [16, 8] and raw["architecture"]["n_outputs"] == 3
    assert raw["hyperparameters"]["dropout"] == 0.1 and raw["epochs"] == 5
    assert raw["scores"] == {
        "cv_mean": 0.9,
        "cv_std": 0.01,
        "fold_scores": [0.89, 0.91],
        "test_score": fitted.test_score,
        "n_train": len(protocol.pool),
        "n_test": len(protocol.test),
    }

    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        model = load_model(source)
        X = wine.X[protocol.test]
        expected = in_memory_outputs(fitted, X)
        assert torch.equal(model.outputs(X), expected)  # bit for bit
        np.testing.assert_array_equal(model.predict_proba(X), torch.softmax(expected, 1).numpy())
        labels = model.predict(X)
        assert list(labels) == [wine.classes[i] for i in expected.argmax(1).tolist()]
        accuracy = float(np.mean(labels == np.asarray(wine.classes)[wine.y[protocol.test]]))
        assert accuracy == pytest.approx(fitted.test_score, abs=1e-6)  # a float32 mean
        assert model.test_score == fitted.test_score
    assert not model.model.training  # evaluation mode: running BN statistics, no dropout
    # Float64 input and a single sample are taken as the training rows were.
    assert list(model.predict(X.astype(np.float64))) == list(labels)
    assert model.predict(X[0]).tolist() == [labels[0]]
    with pytest.raises(ValueError, match="13"):
        model.predict(X[:, :5])


def test_a_regression_model_predicts_in_the_targets_units(tmp_path) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(150, 4)).astype(np.float32)
    y = 1000.0 * X[:, 0] - 300.0 * X[:, 1] + 5000.0  # far from z-scores
    data = make_dataset("scaled", X, y, task="regression")
    spec = StudySpec(
        dataset="x",
        task="regression",
        model={"hidden": [8]},
        training={"lr": 0.01},
        cv={"folds": 3, "test_fraction": 0.2},
    )
    fitted, protocol = fit(data, spec, epochs=30)
    model = load_model(packing.to_bytes(packed(fitted, data, protocol)))
    X_test, y_test = data.X[protocol.test], data.y[protocol.test]
    predicted = model.predict(X_test)
    assert fitted.y_scaler is not None
    expected = fitted.y_scaler.inverse(in_memory_outputs(fitted, X_test).numpy())[:, 0]
    np.testing.assert_array_equal(predicted, expected)
    assert abs(predicted.mean() - 5000.0) < 500.0  # de-standardized, not z-scores
    # The stored test MSE is the MSE of these predictions, in the target's own units.
    mse = float(np.mean((predicted.astype(np.float64) - y_test) ** 2))
    assert mse == pytest.approx(fitted.test_score, rel=1e-4)
    with pytest.raises(ValueError, match="classification"):
        model.predict_proba(X_test)


def test_a_cnn_round_trips_and_takes_flat_or_shaped_inputs(digits) -> None:
    spec = StudySpec(
        dataset="builtin:digits",
        model={"kind": "cnn", "channels": [4], "hidden": [8]},
        cv={"folds": 2, "test_fraction": 0.1},
    )
    fitted, protocol = fit(digits, spec, epochs=1)
    model = load_model(packing.to_bytes(packed(fitted, digits, protocol)))
    X = digits.X[protocol.test]
    assert model.input_shape == (1, 8, 8)
    assert torch.equal(model.outputs(X), in_memory_outputs(fitted, X))
    assert list(model.predict(X.reshape(-1, 1, 8, 8))) == list(model.predict(X))


def test_a_table_model_predicts_without_pandas(tmp_path) -> None:
    """pandas is no dependency of regtune (``make serve`` leaves it out, and no module of
    trainer/ or service/ imports it): in a process where ``import pandas`` fails, the service
    and the CLI import and a table's model file predicts raw rows (dicts, or lists in column
    order). A DataFrame, which only a user with pandas holds, is read as its records."""
    rng = np.random.default_rng(0)
    lines = ["colour,size,label"] + [
        f"{rng.choice(['red', 'blue', ''])},{rng.normal():.3f},{'yes' if i % 3 else 'no'}"
        for i in range(60)
    ]
    data = load_csv("\n".join(lines).encode(), "label")
    spec = StudySpec(dataset="t.csv", model={"hidden": [8]}, cv={"folds": 2, "test_fraction": 0.2})
    fitted, protocol = fit(data, spec, epochs=2)
    (tmp_path / "model.pt").write_bytes(packing.to_bytes(packed(fitted, data, protocol)))
    rows = [
        {"colour": "red", "size": 0.5},
        {"colour": "", "size": ""},  # blanks, imputed as in training
        {"colour": "mauve", "size": -1.0},  # a level never seen
    ]
    script = (
        "import json, sys\n"
        "sys.modules['pandas'] = None  # import pandas raises ImportError\n"
        "import service.cli, service.http.app, service.work.worker\n"
        "from trainer.model_file.loading import load_model\n"
        "model = load_model('model.pt')\n"
        f"rows = {rows!r}\n"
        "print(json.dumps([model.predict(rows).tolist(),\n"
        "    model.predict([[r['colour'], r['size']] for r in rows]).tolist()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    by_dicts, by_lists = json.loads(done.stdout)
    expected = load_model(tmp_path / "model.pt").predict(rows).tolist()
    assert by_dicts == by_lists == expected and set(expected) <= {"yes", "no"}


def test_the_refit_trains_for_the_median_best_epoch() -> None:
    # best_epochs are 0-based: a fold best after its first epoch says 0.
    assert refit_epochs([0, 0, 0]) == 1
    assert refit_epochs([2, 3, 40]) == 4  # the median, not pulled up by one late fold
    assert refit_epochs([4, 1, 9, 6, 2]) == 5
    assert refit_epochs([1, 2]) == 3  # median 1.5 rounds half to even: 2, then + 1
    assert refit_epochs([-1]) == 1


def test_final_model_packs_the_best_trial(wine) -> None:
    spec = StudySpec.model_validate(
        tiny_study(n_trials=2, training={"max_epochs": 6}, cv={"folds": 3, "test_fraction": 0.2})
    )
    outcome = run_study(spec, wine, refit_best=False)
    assert outcome.best is not None
    protocol = CVProtocol.of(spec, wine)
    fitted, packed_model = final_model(spec, wine, protocol, outcome.best, study={"id": "s1"})
    attrs = outcome.best.user_attrs
    assert fitted.epochs == refit_epochs(attrs["best_epochs"])
    model = load_model(packing.to_bytes(packed_model))
    assert model.scores["cv_mean"] == attrs["cv_mean"]
    assert model.scores["fold_scores"] == attrs["fold_scores"]
    assert model.hyperparameters == attrs["config"]
    assert model.metadata["trial"]["number"] == outcome.best.number
    assert model.metadata["study"] == {"id": "s1"}
    X, y = wine.X[protocol.test], wine.y[protocol.test]
    accuracy = float(np.mean(model.predict(X) == np.asarray(wine.classes)[y]))
    assert accuracy == pytest.approx(model.test_score, abs=1e-6)


def test_files_that_are_not_regtune_models_are_refused(tmp_path) -> None:
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, buffer)
    with pytest.raises(ArtifactError, match="not a regtune model"):
        load_model(buffer.getvalue())
    with pytest.raises(ArtifactError, match="not a regtune model"):
        load_model(b"definitely not a torch file")

    smuggled = io.BytesIO()
    torch.save({"format": "regtune-model", "version": 1, "x": Payload()}, smuggled)
    with pytest.raises(ArtifactError):
        load_model(smuggled.getvalue())
    newer = io.BytesIO()
    torch.save({"format": "regtune-model", "version": 99}, newer)
    with pytest.raises(ArtifactError, match="version 99"):
        load_model(newer.getvalue())


def test_the_writer_writes_the_current_format_and_version_1_is_read_as_it(wine) -> None:
    fitted, protocol = fit(wine, StudySpec(dataset="builtin:wine"), epochs=1)
    data = packing.to_bytes(packed(fitted, wine, protocol))
    written = torch.load(io.BytesIO(data), weights_only=True)
    assert written["format_version"] == FORMAT_VERSION == 2
    assert written["version"] == 1  # what readers from before format_version check
    assert set(written) == ModelFile.__required_keys__  # the one definition, no key more or less

    def layout(file: dict[str, Any]) -> list[set[str]]:
        return [set(file), set(file["architecture"]), set(file["preprocessing"])]

    old = torch.load(V1_FILE, weights_only=True)
    assert "format_version" not in old and old["version"] == 1
    upgraded = read(V1_FILE)
    assert upgraded["format_version"] == FORMAT_VERSION
    assert layout(dict(upgraded)) == layout(written)


def test_a_file_of_format_version_1_loads_and_predicts_as_it_did() -> None:
    """A table model with a fold ensemble, written by regtune before format_version: today's
    reader predicts its raw rows (blanks, an unseen level) as the model did then."""
    expected = json.loads(V1_PREDICTIONS.read_text())
    rows = expected["rows"]
    model = load_model(V1_FILE)
    np.testing.assert_allclose(model.outputs(rows).numpy(), expected["outputs"], rtol=1e-5)
    assert model.predict(rows).tolist() == expected["labels"]
    folds = load_model(V1_FILE, ensemble=True)
    probabilities = folds.predict_proba(rows)
    np.testing.assert_allclose(probabilities, expected["ensemble_probabilities"], rtol=1e-5)
    assert folds.predict(rows).tolist() == expected["ensemble_labels"]


def test_a_version_1_file_from_before_groups_and_ensembles_still_loads() -> None:
    """Version-1 files written before regtune stored dropout groups, the network's description
    and fold ensembles lack those keys; they read as none of each."""
    old = torch.load(V1_FILE, weights_only=True)
    for key in ("encoded_feature_names", "ensemble", "ensemble_error"):
        del old[key]
    del old["architecture"]["groups"], old["architecture"]["network"]
    buffer = io.BytesIO()
    torch.save(old, buffer)
    expected = json.loads(V1_PREDICTIONS.read_text())
    model = load_model(buffer.getvalue())
    assert model.predict(expected["rows"]).tolist() == expected["labels"]
    assert model.metadata["ensemble"] is None and model.metadata["ensemble_error"] is None
    assert model.metadata["encoded_feature_names"] == model.feature_names
    with pytest.raises(ArtifactError, match="holds no fold ensemble"):
        load_model(buffer.getvalue(), ensemble=True)


def test_a_file_of_a_newer_format_is_refused_naming_both_versions() -> None:
    newer = torch.load(V1_FILE, weights_only=True) | {"format_version": FORMAT_VERSION + 1}
    buffer = io.BytesIO()
    torch.save(newer, buffer)
    message = (
        f"this model file is format version {FORMAT_VERSION + 1}, newer than this regtune "
        f"reads (format version {FORMAT_VERSION} and older): upgrade regtune to load it"
    )
    with pytest.raises(ArtifactError, match=re.escape(message)):
        load_model(buffer.getvalue())


def ensemble_study(
    dataset: Dataset, **spec: Any
) -> tuple[CVProtocol, optuna.trial.FrozenTrial, bytes]:
    """A small study with ``final_model.ensemble`` and its best trial's packed file."""
    study_spec = StudySpec.model_validate(
        {
            "dataset": f"builtin:{dataset.name.removeprefix('builtin:')}",
            "n_trials": 2,
            "model": {"hidden": [16]},
            "training": {"max_epochs": 6},
            "cv": {"folds": 3, "test_fraction": 0.25},
            "final_model": {"ensemble": True},
            **spec,
        }
    )
    outcome = run_study(study_spec, dataset, refit_best=False)
    assert outcome.best is not None
    protocol = CVProtocol.of(study_spec, dataset)
    _, packed_model = final_model(study_spec, dataset, protocol, outcome.best)
    return protocol, outcome.best, packing.to_bytes(packed_model)


def test_the_fold_ensemble_holds_the_best_trials_own_fold_models(wine) -> None:
    # Wilcoxon studies train in the per-trial engine, as the ensemble does (other studies
    # train in the population engine, whose dropout draws differ: same procedure, other masks).
    protocol, best, data = ensemble_study(wine, pruner={"kind": "wilcoxon"})
    folds = load_model(data, ensemble=True)
    assert len(folds.members) == len(protocol.splits) == 3
    labels = np.asarray(wine.classes)
    for k, (member, split) in enumerate(zip(folds.members, protocol.splits, strict=True)):
        # Retrained with the trial's seeds and schedule: each member scores on its own
        # validation fold exactly what the trial recorded for that fold.
        own = float(np.mean(member.predict(wine.X[split.score]) == labels[wine.y[split.score]]))
        assert own == pytest.approx(best.user_attrs["fold_scores"][k], abs=1e-6)
        assert member.epochs == best.user_attrs["best_epochs"][k] + 1
    # The members' standardizations are their own fit rows', not the refit's.
    assert not np.allclose(folds.members[0].x_scaler.mean, folds.members[1].x_scaler.mean)


def test_the_ensemble_averages_probabilities_and_reports_its_test_score(wine) -> None:
    protocol, _, data = ensemble_study(wine)
    folds = load_model(data, ensemble=True)
    X, y = wine.X[protocol.test], np.asarray(wine.classes)[wine.y[protocol.test]]
    mean = np.mean([m.predict_proba(X) for m in folds.members], axis=0)
    np.testing.assert_allclose(folds.predict_proba(X), mean, rtol=1e-6)
    np.testing.assert_allclose(mean.sum(1), 1.0, rtol=1e-5)
    labels = folds.predict(X)
    assert list(labels) == list(np.asarray(wine.classes)[mean.argmax(1)])
    assert folds.test_score == pytest.approx(float(np.mean(labels == y)), abs=1e-6)
    # The refit is still the file's main model; its metadata names the ensemble, no weights.
    single = load_model(data)
    assert single.test_score is not None
    assert single.metadata["ensemble"] == {"members": 3, "test_score": folds.test_score}


def test_a_regression_ensemble_averages_in_the_targets_units() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 4)).astype(np.float32)
    y = (X @ np.array([2.0, -1.0, 0.5, 0.0]) * 50 + 1000).astype(np.float32)
    dataset = make_dataset("reg", X, y, task="regression")
    protocol, _, data = ensemble_study(
        dataset, task="regression", objective={"metric": "mse"}, training={"max_epochs": 8}
    )
    folds = load_model(data, ensemble=True)
    X_test, y_test = dataset.X[protocol.test], dataset.y[protocol.test]
    mean = np.mean([m.predict(X_test) for m in folds.members], axis=0)
    np.testing.assert_allclose(folds.predict(X_test), mean, rtol=1e-6)
    assert np.abs(mean - 1000).max() < 1000  # in the target's units, not standardized
    assert folds.test_score == pytest.approx(float(np.mean((mean - y_test) ** 2)), rel=1e-4)


def test_a_file_without_an_ensemble_says_how_to_get_one(wine) -> None:
    fitted, protocol = fit(wine, StudySpec(dataset="builtin:wine"), epochs=2)
    data = packing.to_bytes(packed(fitted, wine, protocol))
    with pytest.raises(ArtifactError, match=re.escape('"final_model": {"ensemble": true}')):
        load_model(data, ensemble=True)


def test_a_fold_that_diverges_costs_the_ensemble_not_the_model(wine, monkeypatch) -> None:
    def diverges(*args: Any, **kwargs: Any) -> Any:  # injected: the retrained fold 1 diverges
        raise DivergedError("fold 1 diverged at epoch 3: training loss nan")

    monkeypatch.setattr(tuned_model_module, "fold_ensemble", diverges)
    _, _, data = ensemble_study(wine)
    model = load_model(data)
    assert model.test_score is not None
    assert model.metadata["ensemble"] is None
    reason = "the fold ensemble could not be built: fold 1 diverged at epoch 3"
    assert model.metadata["ensemble_error"].startswith(reason)
    with pytest.raises(ArtifactError, match=reason):
        load_model(data, ensemble=True)
