"""Properties of the spec validators (``trainer/specs/study_spec.py``), checked with Hypothesis.

Derandomized and bounded, so that the file runs in seconds and every run checks the same
examples.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from spec_strategies import FIELDS, fits_schema, json_values, place, section_of

from trainer.specs.study_spec import DOMAINS, SEARCHABLE, Limits, Range, SearchSpace, StudySpec

PROFILE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
positive = st.floats(min_value=1e-12, max_value=1e12, allow_nan=False, allow_infinity=False)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


def messages(exc: ValidationError) -> str:
    return "\n".join(
        ".".join(str(p) for p in e["loc"]) + ": " + str(e["msg"]) for e in exc.errors()
    )


def ordered(draw: st.DrawFn, values: st.SearchStrategy[float]) -> tuple[float, float]:
    a, b = draw(values), draw(values)
    if a == b:
        b = a + max(abs(a), 1.0) * 1e-6 if a != 0 else 1e-6
    return min(a, b), max(a, b)


@st.composite
def valid_ranges(draw: st.DrawFn) -> dict[str, Any]:
    log = draw(st.booleans())
    low, high = ordered(draw, positive if log else finite)
    return {"low": low, "high": high, "log": log}


# --- Range -------------------------------------------------------------------------------


@PROFILE
@given(valid_ranges())
def test_a_finite_ordered_range_validates_and_round_trips(data: dict[str, Any]) -> None:
    r = Range.model_validate(data)
    assert (r.low, r.high, r.log) == (data["low"], data["high"], data["log"])
    assert Range.model_validate(r.model_dump()) == r
    assert Range.model_validate_json(r.model_dump_json()) == r


@PROFILE
@given(finite, st.floats(min_value=0, max_value=1e12), st.booleans())
def test_low_not_below_high_is_refused_naming_both(low: float, gap: float, log: bool) -> None:
    high = low - gap  # high <= low
    with pytest.raises(ValidationError) as caught:
        Range.model_validate({"low": low, "high": high, "log": log})
    text = messages(caught.value)
    if not (log and low <= 0):
        assert f"low ({low:g}) must be < high ({high:g})" in text, text
    else:  # a log range with low <= 0 may be refused for that first
        assert "must be < high" in text or "a log range needs low > 0" in text, text


@PROFILE
@given(st.floats(max_value=0, allow_nan=False, allow_infinity=False, min_value=-1e12), positive)
def test_a_log_range_needs_a_positive_low(low: float, high: float) -> None:
    with pytest.raises(ValidationError) as caught:
        Range.model_validate({"low": low, "high": high, "log": True})
    assert f"a log range needs low > 0, got low={low:g}" in messages(caught.value)


@PROFILE
@given(non_finite, finite, st.booleans())
def test_nan_and_infinite_bounds_are_refused(bad: float, other: float, low_is_bad: bool) -> None:
    data = {"low": bad, "high": other} if low_is_bad else {"low": other, "high": bad}
    with pytest.raises(ValidationError) as caught:
        Range.model_validate(data)
    text = messages(caught.value)
    assert ("low" if low_is_bad else "high") in text and "finite number" in text, text


# --- search space ------------------------------------------------------------------------


def in_domain(name: str) -> st.SearchStrategy[float]:
    domain = DOMAINS[name]
    high = min(domain.high, 1e6 if name != "batch_size" else Limits().max_batch_size)
    if domain.integer:
        return st.integers(min_value=int(domain.low), max_value=int(high))
    return st.floats(
        min_value=domain.low,
        max_value=high,
        exclude_min=domain.low_open,
        exclude_max=domain.high_open or domain.high > 1e6,
        allow_nan=False,
    )


@PROFILE
@given(st.data())
def test_a_point_inside_its_domain_is_kept_as_given(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(DOMAINS)))
    value = data.draw(in_domain(name))
    space = SearchSpace.model_validate({name: value})
    assert getattr(space, name) == value
    again = SearchSpace.model_validate_json(space.model_dump_json())
    assert getattr(again, name) == value


@PROFILE
@given(st.data())
def test_a_point_outside_its_domain_is_refused_naming_the_parameter(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(DOMAINS)))
    domain = DOMAINS[name]
    below = st.floats(max_value=domain.low, exclude_max=not domain.low_open, min_value=-1e12)
    choices = [below]
    if domain.high < math.inf:
        choices.append(
            st.floats(min_value=domain.high, exclude_min=not domain.high_open, max_value=1e12)
        )
    if domain.integer:
        choices.append(
            st.floats(min_value=domain.low + 0.01, max_value=1e6).filter(
                lambda v: not v.is_integer()
            )
        )
    value = data.draw(st.one_of(choices) | non_finite)
    with pytest.raises(ValidationError) as caught:
        SearchSpace.model_validate({name: value})
    errors = caught.value.errors()
    assert [e["loc"] for e in errors] == [(name,)], errors
    assert "must be" in errors[0]["msg"], errors


# --- limits ------------------------------------------------------------------------------

LIMITED = {
    # spec path -> (Limits field, message prefix)
    ("n_trials",): ("max_trials", "n_trials must be ≤"),
    ("cv", "folds"): ("max_folds", "folds must be ≤"),
    ("training", "max_epochs"): ("max_epochs", "max_epochs must be ≤"),
    ("training", "batch_size"): ("max_batch_size", "batch_size must be ≤"),
    ("timeout_s",): ("max_timeout_s", "timeout_s must be ≤"),
    ("search_space", "batch_size"): ("max_batch_size", "batch_size must be ≤"),
}


def nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


@PROFILE
@given(st.sampled_from(sorted(LIMITED)), st.integers(min_value=2, max_value=10_000), st.data())
def test_a_value_over_its_limit_is_refused_naming_the_field(
    path: tuple[str, ...], bound: int, data: st.DataObject
) -> None:
    field, message = LIMITED[path]
    limits = Limits(**{field: bound})
    over = data.draw(st.integers(min_value=bound + 1, max_value=bound * 1000))
    at = data.draw(st.integers(min_value=2, max_value=bound))
    spec = {"dataset": "builtin:wine", **nest(path, over)}
    with pytest.raises(ValidationError) as caught:
        StudySpec.model_validate(spec, context={"limits": limits})
    errors = caught.value.errors()
    assert [e["loc"] for e in errors] == [path], errors
    assert f"{message} {bound:g}" in errors[0]["msg"], errors
    # At the bound it passes, and without a context the default limits apply.
    ok = StudySpec.model_validate(
        {"dataset": "builtin:wine", **nest(path, at)}, context={"limits": limits}
    )
    assert ok is not None


@PROFILE
@given(
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=1, max_value=512),
    st.integers(min_value=1, max_value=4),
)
def test_layers_and_widths_over_their_limits_are_refused(
    max_layers: int, max_width: int, extra: int
) -> None:
    limits = Limits(max_layers=max_layers, max_width=max_width)
    context = {"limits": limits}
    fits = [max_width] * max_layers
    assert (
        StudySpec.model_validate(
            {"dataset": "d", "model": {"hidden": fits}}, context=context
        ).model.hidden
        == fits
    )
    for hidden, fragment in (
        ([1] * (max_layers + extra), f"at most {max_layers} layers"),
        ([max_width + extra], f"layer widths must be ≤ {max_width}"),
    ):
        for spec, loc in (
            ({"model": {"hidden": hidden}}, ("model", "hidden")),
            ({"search_space": {"hidden": [fits, hidden]}}, ("search_space", "hidden")),
        ):
            with pytest.raises(ValidationError) as caught:
                StudySpec.model_validate({"dataset": "d", **spec}, context=context)
            errors = caught.value.errors()
            assert [e["loc"] for e in errors] == [loc] and fragment in errors[0]["msg"], errors


# --- junk ---------------------------------------------------------------------------------


def section(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(
        st.sampled_from(list(model.model_fields)) | st.text(max_size=4), json_values, max_size=4
    )


# Junk under the real keys (read from the models), so that it reaches every nested model and
# custom validator; a valid dataset often, so that the spec-wide checks run too.
junk_specs = st.fixed_dictionaries(
    {},
    optional={
        name: section(model) if (model := section_of(name)) is not None else json_values
        for name in StudySpec.model_fields
    }
    | {"dataset": json_values | st.just("builtin:wine")},
)


def validate_or_refuse(data: Any) -> None:
    """Validation either passes or raises ValidationError; anything else is a bug."""
    try:
        spec = StudySpec.model_validate(data, context={"limits": Limits(max_trials=100)})
    except ValidationError as exc:
        assert exc.errors(), "a ValidationError with no errors"
        json.dumps(exc.errors(include_input=False, include_context=False))
        return
    # What validates serializes to JSON and validates again to the same spec.
    text = json.dumps(spec.model_dump(mode="json"), allow_nan=False)
    assert StudySpec.model_validate_json(text) == spec


@settings(PROFILE, max_examples=400)
@given(json_values)
def test_arbitrary_junk_only_ever_raises_a_validation_error(data: Any) -> None:
    validate_or_refuse(data)


@settings(PROFILE, max_examples=300)
@given(junk_specs)
def test_junk_under_the_real_keys_only_ever_raises_a_validation_error(data: Any) -> None:
    validate_or_refuse(data)


@PROFILE
@given(st.sampled_from(SEARCHABLE), st.integers(min_value=10**309, max_value=10**400))
def test_integers_too_large_for_a_float_are_refused(name: str, huge: int) -> None:
    for value in (huge, [huge], {"low": 1, "high": huge}):
        with pytest.raises(ValidationError):
            SearchSpace.model_validate({name: value})


@settings(PROFILE, max_examples=1_000)
@given(st.sampled_from(FIELDS), json_values)
def test_a_value_the_schema_does_not_allow_is_refused_naming_its_field(
    path: tuple[str, ...], value: Any
) -> None:
    """Any JSON at any field of the spec: a ValidationError or a valid spec, never another
    exception; a value outside the field's JSON schema is refused at that field."""
    data = {"dataset": "builtin:wine", **place(path, value)}
    validate_or_refuse(data)
    if not fits_schema(path, value):
        with pytest.raises(ValidationError) as caught:
            StudySpec.model_validate(data)
        assert any(e["loc"][: len(path)] == path for e in caught.value.errors()), (
            caught.value.errors()
        )
