"""Specs as a store keeps them (JSON, validated at submission), read back.

The submission's size limits may have changed since a spec was stored, so none apply when it
is read again; a status request reads only the field it needs.
"""

from __future__ import annotations

from typing import Any

from trainer.specs.network_spec import ModelSpec
from trainer.specs.spec_base import UNLIMITED
from trainer.specs.study_spec import StudySpec


def stored_spec(spec: dict[str, Any]) -> StudySpec:
    """A spec stored as JSON, read back: it was validated at submission under the limits of
    the time, which may have changed since, so none apply now."""
    return StudySpec.model_validate(spec, context={"limits": UNLIMITED})


def stored_trade_off(spec: dict[str, Any]) -> str | None:
    """The ``objective.trade_off`` of a spec stored as JSON, None for one objective: read
    without validating the whole spec (a status request reads it)."""
    trade_off = (spec.get("objective") or {}).get("trade_off")
    return str(trade_off) if trade_off else None


def stored_model(spec: dict[str, Any]) -> ModelSpec:
    """The ``model`` of a spec stored as JSON (validated at submission, under its limits)."""
    return ModelSpec.model_validate(spec.get("model") or {}, context={"limits": UNLIMITED})
