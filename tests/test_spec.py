"""Spec validation: defaults from SPEC.md and precise messages naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from trainer.spec import Limits, Range, StudySpec


def errors(data: dict[str, Any], **context: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        StudySpec.model_validate(data, context=context or None)
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in info.value.errors()]


def test_minimal_spec_gets_the_documented_defaults() -> None:
    spec = StudySpec.model_validate({"dataset": "builtin:digits"})
    space = spec.search_space
    assert space.weight_decay == Range(low=1e-6, high=1e-1, log=True)
    assert space.l1 == Range(low=1e-7, high=1e-3, log=True)
    assert space.dropout == Range(low=0.0, high=0.7)
    assert space.bn_momentum == Range(low=0.01, high=0.99)
    assert space.patience == Range(low=2, high=20)
    assert (spec.sampler.kind, spec.pruner.kind) == ("tpe", "median")
    t = spec.training
    assert (t.optimizer, t.lr, t.batch_size, t.max_epochs, t.l2_mode) == (
        "adam",
        1e-3,
        64,
        100,
        "coupled",
    )


def test_full_example_of_the_spec_validates() -> None:
    example = {
        "name": "digits-reg",
        "dataset": "builtin:digits",
        "task": "classification",
        "n_trials": 40,
        "timeout_s": 3600,
        "seed": 0,
        "model": {"kind": "mlp", "hidden": [256, 256], "batch_norm": True},
        "training": {
            "optimizer": "adam",
            "lr": 0.001,
            "batch_size": 64,
            "max_epochs": 100,
            "l2_mode": "coupled",
            "min_delta": 0.0,
        },
        "search_space": {
            "weight_decay": {"low": 1e-6, "high": 0.1, "log": True},
            "dropout": {"low": 0.0, "high": 0.5},
            "patience": 10,
        },
        "cv": {"folds": 5, "shuffle": True, "inner_validation": 0.1, "test_fraction": 0.2},
        "objective": {"metric": "accuracy"},
        "sampler": {"kind": "tpe"},
        "pruner": {"kind": "median"},
    }
    spec = StudySpec.model_validate(example)
    # Every value given is the value held, and the spec survives a JSON round trip unchanged.
    assert spec.search_space.weight_decay == Range(low=1e-6, high=0.1, log=True)
    assert spec.search_space.patience == 10 and spec.cv.test_fraction == 0.2
    assert spec.model.hidden == [256, 256] and spec.training.max_epochs == 100
    assert StudySpec.model_validate(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        (
            {"search_space": {"dropout": {"low": 0.5, "high": 0.2}}},
            "search_space.dropout",
            "low (0.5) must be < high (0.2)",
        ),
        ({"search_space": {"dropout": 1.0}}, "search_space.dropout", "[0, 1)"),
        ({"search_space": {"dropout": [0.1, 1.2]}}, "search_space.dropout", "got 1.2"),
        ({"search_space": {"bn_momentum": 0}}, "search_space.bn_momentum", "(0, 1]"),
        (
            {"search_space": {"bn_momentum": {"low": 0.5, "high": 1.5}}},
            "search_space.bn_momentum",
            "got 1.5",
        ),
        (
            {"search_space": {"weight_decay": {"low": 0, "high": 0.1, "log": True}}},
            "search_space.weight_decay",
            "log range needs low > 0",
        ),
        ({"search_space": {"weight_decay": -1e-3}}, "search_space.weight_decay", "got -0.001"),
        ({"search_space": {"patience": 2.5}}, "search_space.patience", "an integer"),
        ({"search_space": {"patience": 0}}, "search_space.patience", "got 0"),
        ({"search_space": {"optimizer": ["adam", "lbfgs"]}}, "search_space.optimizer", "one of"),
        ({"search_space": {"l1": "a lot"}}, "search_space.l1", "got 'a lot'"),
        ({"search_space": {"dropout": []}}, "search_space.dropout", "must not be empty"),
        ({"cv": {"folds": 1}}, "cv.folds", "greater than or equal to 2"),
        ({"cv": {"test_fraction": 0.9}}, "cv.test_fraction", "less than or equal to 0.5"),
        ({"training": {"lr": 0}}, "training.lr", "greater than 0"),
        ({"training": {"l2_mode": "both"}}, "training.l2_mode", "'coupled' or 'decoupled'"),
        ({"n_trials": 0}, "n_trials", "greater than or equal to 1"),
        ({"model": {"hidden": [0]}}, "model.hidden.0", "greater than or equal to 1"),
        ({"sampler": {"kind": "bayes"}}, "sampler.kind", "'tpe'"),
        ({"cv": {"fold": 5}}, "cv.fold", "Extra inputs are not permitted"),
        (
            {"task": "regression", "objective": {"metric": "accuracy"}},
            "",
            "needs task 'classification'",
        ),
    ],
)
def test_bad_fields_are_named_with_the_problem(data: dict, field: str, fragment: str) -> None:
    found = errors({"dataset": "builtin:digits"} | data)
    assert any(loc == field and fragment in msg for loc, msg in found), found


def test_dataset_is_required() -> None:
    assert ("dataset", "Field required") in errors({})


def test_limits_come_from_the_validation_context() -> None:
    limits = Limits(
        max_trials=10, max_folds=4, max_epochs=50, max_width=64, max_layers=2, max_batch_size=128
    )
    data = {
        "dataset": "builtin:digits",
        "n_trials": 11,
        "cv": {"folds": 5},
        "training": {"max_epochs": 51, "batch_size": 256},
        "model": {"hidden": [65, 8, 8]},
        "search_space": {"batch_size": [32, 512], "hidden": [[8], [128]]},
    }
    found = dict(errors(data, limits=limits))
    assert found["n_trials"].endswith("n_trials must be ≤ 10")
    assert found["cv.folds"].endswith("folds must be ≤ 4")
    assert found["training.max_epochs"].endswith("max_epochs must be ≤ 50")
    assert found["training.batch_size"].endswith("batch_size must be ≤ 128")
    assert "at most 2 layers" in found["model.hidden"]
    assert found["search_space.batch_size"].endswith("batch_size must be ≤ 128")
    assert "widths must be ≤ 64" in found["search_space.hidden"]
    # The same spec is fine under the default limits.
    StudySpec.model_validate(data)


def test_fixed_values_and_choices_are_accepted() -> None:
    spec = StudySpec.model_validate(
        {
            "dataset": "builtin:wine",
            "search_space": {
                "weight_decay": 0,
                "l1": [0, 1e-5],
                "patience": 7,
                "optimizer": ["adam", "sgd"],
                "hidden": [[32], [64, 64]],
            },
        }
    )
    assert spec.search_space.weight_decay == 0
    assert spec.search_space.hidden == [[32], [64, 64]]
