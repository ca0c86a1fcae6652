"""What every spec model shares: strict validation, the operator's limits, the spec's error.

Size limits (trials, folds, epochs, widths) are not hard-coded: pass a :class:`Limits`
as validation context, ``StudySpec.model_validate(data, context={"limits": limits})``.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType


class SpecError(ValueError):
    """The spec does not fit the dataset (e.g. accuracy asked of a regression target);
    ``field`` names the part of the spec at fault, dotted (``model.layers.3``)."""

    def __init__(self, message: str, field: str = "spec") -> None:
        super().__init__(message)
        self.field = field


class Limits(BaseModel):
    """Upper bounds on what one study may ask for; the service sets them from its settings."""

    max_trials: int = 10_000
    max_folds: int = 20
    max_epochs: int = 2_000
    max_layers: int = 8
    max_network_layers: int = 200  # every entry of model.layers, residual bodies included
    max_plugin_options_bytes: int = 4_096  # model.options as JSON
    max_width: int = 4_096
    max_batch_size: int = 65_536
    max_timeout_s: float = 30 * 86_400.0
    # Weights of one network, counted once the dataset fixes the input and output widths
    # (the service checks it at submission): 50M float32 parameters are 200 MB per trial.
    max_parameters: int = 50_000_000


# For specs validated once already (stored ones, model files): no bound but the types'.
UNLIMITED = Limits(max_layers=2**31 - 1, max_width=2**31 - 1, max_network_layers=2**31 - 1)


def _limits(info: ValidationInfo) -> Limits:
    context = info.context or {}
    limits = context.get("limits")
    return limits if isinstance(limits, Limits) else Limits()


def at_most(limit: str) -> AfterValidator:
    """Check a value against ``Limits.<limit>`` of the validation context."""

    def check(value: Any, info: ValidationInfo) -> Any:
        bound = getattr(_limits(info), limit)
        if value is not None and value > bound:
            raise ValueError(f"{info.field_name} must be ≤ {bound:g}")
        return value

    return AfterValidator(check)


class Strict(BaseModel):
    """A spec model: unknown keys refused (with the closest known key when one is near),
    every value of its own JSON type (``"5"`` or ``true`` is no integer), no NaN/Infinity
    (JSON has none, but Python's parser accepts them)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    @model_validator(mode="wrap")
    @classmethod
    def _did_you_mean(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            if not any(_suggestion(cls, e) or _suggested(e) for e in errors):
                raise
            # Each model on the way up renames its descendants' suggestions, so that the
            # outermost one (the spec) names them from its root: 'training.max_epochs'.
            rebuilt = [_with_suggestion(e, _suggestion(cls, e)) for e in errors]
            raise ValidationError.from_exception_data(exc.title, rebuilt) from None


def check_widths(widths: list[int], limits: Limits) -> None:
    if len(widths) > limits.max_layers:
        raise ValueError(f"at most {limits.max_layers} layers, got {len(widths)}")
    if any(w > limits.max_width for w in widths):
        raise ValueError(f"layer widths must be ≤ {limits.max_width}")


def field_problem(error: Any, where_empty: str = "") -> str:
    """One pydantic error as ``dotted.field: message`` (``where_empty`` when it has no field),
    without pydantic's "Value error, " prefix: how a spec error reads everywhere."""
    where = ".".join(str(p) for p in error["loc"]) or where_empty
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


EXTRA = "extra_forbidden"
DID_YOU_MEAN = "Extra inputs are not permitted; did you mean '{did_you_mean}'?"
BUILTIN_ERRORS = frozenset(typing.get_args(ErrorType))


def _suggestion(model: type[BaseModel], error: ErrorDetails) -> str | None:
    """The field of ``model`` closest to an unknown key of its own, if one is close."""
    if error["type"] != EXTRA or len(error["loc"]) != 1 or _suggested(error):
        return None
    close = difflib.get_close_matches(str(error["loc"][0]), list(model.model_fields), n=1)
    return close[0] if close else None


def _suggested(error: ErrorDetails) -> bool:
    return "suggestion" in error.get("ctx", {})


def _with_suggestion(error: ErrorDetails, suggestion: str | None) -> InitErrorDetails:
    """``error`` as pydantic takes it back, its suggestion (new or inherited) named in full."""
    ctx = dict(error.get("ctx", {}))
    kind: str | PydanticCustomError
    if suggestion is not None or _suggested(error):
        ctx["suggestion"] = key = suggestion or ctx["suggestion"]
        ctx["did_you_mean"] = ".".join(map(str, [*error["loc"][:-1], key]))
        kind = PydanticCustomError(EXTRA, DID_YOU_MEAN, ctx)
    elif error["type"] in BUILTIN_ERRORS:
        kind = error["type"]
    else:  # a custom error: its message as rendered (no context left to fill in)
        kind, ctx = PydanticCustomError(error["type"], error["msg"]), {}
    rebuilt = InitErrorDetails(type=kind, loc=error["loc"], input=error["input"])
    if ctx and isinstance(kind, str):
        rebuilt["ctx"] = ctx
    return rebuilt
