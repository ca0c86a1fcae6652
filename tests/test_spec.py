"""Spec validation: defaults from SPEC.md and precise messages naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from servers import regtune

from trainer.specs.study_spec import Limits, Range, StudySpec

OUT = {"type": "linear"}  # a network's output layer


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
        ({"search_space": {"max_norm": 0}}, "search_space.max_norm", "(0, inf), got 0"),
        ({"search_space": {"max_norm": -3}}, "search_space.max_norm", "got -3"),
        ({"search_space": {"max_norm": [4, 0.0]}}, "search_space.max_norm", "got 0"),
        (
            {"search_space": {"max_norm": {"low": 0, "high": 10, "log": True}}},
            "search_space.max_norm",
            "log range needs low > 0",
        ),
        ({"search_space": {"max_norm": "large"}}, "search_space.max_norm", "got 'large'"),
        ({"search_space": {"max_norm": True}}, "search_space.max_norm", "a range"),
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
                "max_norm": [3, 4.5],
            },
        }
    )
    assert spec.search_space.weight_decay == 0
    assert spec.search_space.max_norm == [3, 4.5]
    assert spec.search_space.hidden == [[32], [64, 64]]


@pytest.mark.parametrize("groups", [5, [1], "dropout.a", True, 0, [], ""])
def test_groups_of_the_wrong_type_are_refused_by_name(groups: object) -> None:
    """``search_space.groups`` is validated as the mapping it is (5 and [1] raised a
    TypeError: a 500 over HTTP), falsy values included."""
    found = errors({"dataset": "builtin:digits", "search_space": {"groups": groups}})
    assert [loc for loc, _ in found] == ["search_space.groups"], found
    assert "dropout group ranges are written 'dropout.<group>'" in found[0][1], found


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"n_trials": True}, "n_trials"),
        ({"n_trials": "5"}, "n_trials"),
        ({"seed": False}, "seed"),
        ({"cv": {"folds": 3.0}}, "cv.folds"),
        ({"cv": {"shuffle": "yes"}}, "cv.shuffle"),
        ({"cv": {"shuffle": 1}}, "cv.shuffle"),
        ({"training": {"lr": "0.01"}}, "training.lr"),
        ({"training": {"batch_size": True}}, "training.batch_size"),
        ({"training": {"grad_clip": False}}, "training.grad_clip"),
        ({"model": {"hidden": ["16"]}}, "model.hidden.0"),
        ({"model": {"batch_norm": "false"}}, "model.batch_norm"),
        ({"timeout_s": "60"}, "timeout_s"),
        ({"final_model": {"ensemble": 1}}, "final_model.ensemble"),
    ],
)
def test_a_value_of_another_json_type_is_refused_not_coerced(data: dict, field: str) -> None:
    """A number as text, a boolean as a number or a number as a boolean is the wrong type:
    refused naming the field, never silently read as another value (true as 1 trial)."""
    found = errors({"dataset": "builtin:digits"} | data)
    assert [loc for loc, _ in found] == [field], found


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"training": {"max_epoch": 3}}, "training.max_epoch", "'training.max_epochs'?"),
        ({"n_trial": 3}, "n_trial", "'n_trials'?"),
        ({"search_space": {"dropuot": 0.1}}, "search_space.dropuot", "'search_space.dropout'?"),
        ({"cv": {"fold": 5}}, "cv.fold", "'cv.folds'?"),
        ({"sampler": {"knd": "tpe"}}, "sampler.knd", "'sampler.kind'?"),
        (
            {"model": {"kind": "layers", "layers": [{"type": "linear", "outt": 4}, OUT]}},
            "model.layers.0.linear.outt",
            "'model.layers.0.linear.out'?",
        ),
        (  # a range is parsed apart (a parameter may be a range, choices or a number)
            {"search_space": {"lr": {"low": 0.1, "hihg": 1}}},
            "search_space.lr",
            "Value error, high: Field required; "
            "hihg: Extra inputs are not permitted; did you mean 'high'?",
        ),
    ],
)
def test_an_unknown_key_close_to_a_known_one_gets_a_suggestion(
    data: dict, field: str, message: str
) -> None:
    found = errors({"dataset": "builtin:digits"} | data)
    assert [loc for loc, _ in found] == [field], found
    if not message.startswith("Value error"):
        message = f"Extra inputs are not permitted; did you mean {message}"
    assert found[0][1] == message, found


def test_an_unknown_key_far_from_every_known_one_gets_no_suggestion() -> None:
    found = errors({"dataset": "builtin:digits", "training": {"colour": "blue"}})
    assert found == [("training.colour", "Extra inputs are not permitted")], found


def test_a_suggestion_comes_with_every_other_problem_of_the_spec() -> None:
    """The other errors keep their place, type and message beside the suggestion."""
    with pytest.raises(ValidationError) as info:
        StudySpec.model_validate(
            {"dataset": "builtin:digits", "cv": {"folds": 1, "shufle": True}, "n_trials": 0}
        )
    found = {(".".join(map(str, e["loc"])), e["type"], e["msg"]) for e in info.value.errors()}
    assert found == {
        ("n_trials", "greater_than_equal", "Input should be greater than or equal to 1"),
        ("cv.folds", "greater_than_equal", "Input should be greater than or equal to 2"),
        (
            "cv.shufle",
            "extra_forbidden",
            "Extra inputs are not permitted; did you mean 'cv.shuffle'?",
        ),
    }, found


def test_regtune_tune_names_the_close_key_too(tmp_path: Path) -> None:
    """The CLI reads the suggestion from the same validation as the API (a real process)."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"dataset": "builtin:wine", "training": {"max_epoch": 3}}))
    run = regtune(
        "tune", "--spec", str(spec), database_url=f"sqlite:///{tmp_path / 'x.db'}", COLUMNS="200"
    )
    assert run.returncode != 0
    assert (
        "training.max_epoch: Extra inputs are not permitted; did you mean "
        "'training.max_epochs'?" in run.stderr
    ), run.stderr
