"""What every spec model shares: strict validation, the operator's limits, the spec's error.

Size limits (trials, folds, epochs, widths) are not hard-coded: pass a :class:`Limits`
as validation context, ``StudySpec.model_validate(data, context={"limits": limits})``.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationInfo,
)


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
    # JSON has no NaN/Infinity, but Python's parser accepts them: refuse them in every number.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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
