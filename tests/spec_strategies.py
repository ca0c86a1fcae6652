"""Arbitrary JSON for study specs, its vocabulary read from the spec's own pydantic models.

Every field name and every literal value of every model reachable from ``StudySpec`` goes
into the keys and strings drawn, so that a junk value reaches nested models (a range, a
layer) and custom validators, and a field added to a model is covered without a test edit.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from trainer.specs.study_spec import StudySpec


def _members(annotation: Any) -> Iterator[Any]:
    """``annotation`` and everything inside it (unions, lists, ``Annotated``, forward refs)."""
    yield annotation
    for arg in typing.get_args(annotation):
        yield from _members(arg)


def models_in(annotation: Any) -> list[type[BaseModel]]:
    return [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]


def reachable(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every model its fields hold, at any depth, each once."""
    seen: list[type[BaseModel]] = []
    todo = [model]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.append(current)
            todo += [m for f in current.model_fields.values() for m in models_in(f.annotation)]
    return seen


MODELS = reachable(StudySpec)
KEYS = sorted({name for model in MODELS for name in model.model_fields})
WORDS = sorted(
    {
        value
        for model in MODELS
        for field in model.model_fields.values()
        for member in _members(field.annotation)
        if typing.get_origin(member) is typing.Literal
        for value in typing.get_args(member)
        if isinstance(value, str)
    }
)


def section_of(name: str) -> type[BaseModel] | None:
    """The model a top-level key of the spec holds (``training``: ``TrainingSpec``)."""
    found = models_in(StudySpec.model_fields[name].annotation)
    return found[0] if len(found) == 1 else None


# Every field of the spec: its top-level keys, and the keys of each model those hold.
FIELDS: list[tuple[str, ...]] = [(name,) for name in StudySpec.model_fields] + [
    (name, key)
    for name in StudySpec.model_fields
    if (section := section_of(name)) is not None
    for key in section.model_fields
]


def nested(depth: int) -> Any:
    value: Any = "deep"
    for i in range(depth):
        value = [value] if i % 2 else {"layers": value}
    return value


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.integers(min_value=-10, max_value=10).map(lambda n: n * 10**400)  # beyond a float
    | st.floats()  # NaN and ±Infinity too: Python's JSON parser accepts them
    | st.text(max_size=12)  # any unicode
    | st.sampled_from(["", "builtin:wine", "dropout.layer1", "🤖", "\u202e", "1e3", "true"])
    | st.sampled_from(WORDS)
    | st.integers(min_value=1_000, max_value=200_000).map(lambda n: "x" * n)  # huge
    | st.integers(min_value=2, max_value=150).map(nested)  # deep
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=12,
)


def place(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``{"a": {"b": value}}`` for the path ``("a", "b")``."""
    for key in reversed(path):
        value = {key: value}
    return value


SCHEMA = StudySpec.model_json_schema()


def fits_schema(path: tuple[str, ...], value: Any) -> bool:
    """Whether ``value`` is what the spec's JSON schema (the API document's) allows at
    ``path``; one that is not must be refused naming that field."""
    node: dict[str, Any] = SCHEMA
    for key in path:
        node = _definition(node)["properties"][key]
    validator = Draft202012Validator({"$defs": SCHEMA["$defs"], **node})
    return validator.is_valid(value)


def _definition(node: dict[str, Any]) -> dict[str, Any]:
    """The object schema a field's schema refers to (``WarmStartSpec | None``: its model)."""
    for option in [node, *node.get("anyOf", [])]:
        if "properties" in option:
            return option
        if "$ref" in option:
            return SCHEMA["$defs"][option["$ref"].removeprefix("#/$defs/")]
    raise AssertionError(f"no object schema in {node}")
