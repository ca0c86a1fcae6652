"""Warm start: a new study's first trials are the best ones of an earlier study.

A spec's ``warm_start: {"study": ID, "top": k}`` names an earlier study of the same tenant.
At submission its ``k`` best COMPLETE trials (best first by that study's direction, one
``ORDER BY value LIMIT k`` query; a trade-off study's by its metric, its first objective) are
read; each one's parameters are kept where the new
search space can take them (inside a range, among the choices, searched at all) and enqueued
into the new Optuna study, which hands enqueued trials out before it samples anything. A
parameter that does not fit is left to the sampler; what was dropped, and why, is kept in the
study's ``warm_start`` user attribute and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.store.tables import StudyRecord
from service.store.trials import top_trial_ids
from trainer import (
    SEARCHABLE,
    Range,
    SearchSpace,
    SpecError,
    StudySpec,
    TrialRecord,
    domain,
    hidden_key,
)

log = logging.getLogger("regtune.warmstart")
FIELD = "warm_start.study"


class WarmStartError(SpecError):
    """The earlier study is not one of this tenant's (HTTP 422 naming ``warm_start.study``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, FIELD)


@dataclass(frozen=True)
class Plan:
    """What to enqueue: the earlier study's id and its best trials as (number, params)."""

    source: str
    top: int
    candidates: list[tuple[int, dict[str, Any]]]


def plan(session: Session, storage: BaseStorage, tenant: str, spec: StudySpec) -> Plan | None:
    """Resolve ``spec.warm_start`` for ``tenant`` (another tenant's study is not found)."""
    warm = spec.warm_start
    if warm is None:
        return None
    record = session.scalar(
        select(StudyRecord).where(StudyRecord.id == warm.study, StudyRecord.tenant == tenant)
    )
    if record is None or record.optuna_id is None:
        raise WarmStartError(f"no study {warm.study!r} to warm-start from")
    k = min(warm.top, spec.n_trials)  # more would run past the new study's budget
    ids = top_trial_ids(session, record.optuna_id, record.direction, k)
    candidates = [(t.number, t.params) for t in (storage.get_trial(i) for i in ids)]
    return Plan(source=record.id, top=warm.top, candidates=candidates)


def misfit(space: SearchSpace, name: str, value: Any) -> str | None:
    """Why ``value`` of parameter ``name`` cannot be enqueued in ``space`` (None: it can)."""
    if name == "hidden":
        if space.hidden is None:
            return "not searched in this study"
        keys = [hidden_key(h) for h in space.hidden]
        return None if value in keys else f"not among the choices {keys}"
    entries = {name: getattr(space, name) for name in SEARCHABLE} | space.augment.given()
    if name not in entries:
        return "not a search-space parameter"
    entry = entries[name]
    if isinstance(entry, list):
        return None if value in entry else f"not among the choices {entry}"
    if not isinstance(entry, Range):
        return "not searched in this study" if entry is None else f"fixed to {entry!r} here"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "not a number"
    low: float
    high: float
    if _integer(name):
        low, high = int(entry.low), int(entry.high)
        if value != int(value):
            return "not an integer"
    else:
        low, high = entry.low, entry.high
    if not low <= value <= high:
        return f"outside [{low:g}, {high:g}]"
    return None


def _integer(name: str) -> bool:
    known = domain(name)
    return known is not None and known.integer


def fitting(space: SearchSpace, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The parameters that fit ``space``, and a 'name=value: why' line for each that does not."""
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for name, value in params.items():
        why = misfit(space, name, value)
        if why is None:
            integer = _integer(name) and not isinstance(value, str)
            kept[name] = int(value) if integer else value
        else:
            dropped.append(f"{name}={value!r}: {why}")
    return kept, dropped


def enqueue(study: optuna.Study, space: SearchSpace, warm: Plan) -> dict[str, Any]:
    """Enqueue the plan's parameters (best first) into ``study``; record what happened."""
    enqueued: list[int] = []
    dropped: list[str] = []
    seen: list[dict[str, Any]] = []
    for number, params in warm.candidates:
        kept, misfits = fitting(space, params)
        dropped += [f"trial {number}: {line}" for line in misfits]
        if not kept or kept in seen:  # nothing left, or the same as a better trial's
            continue
        seen.append(kept)
        study.enqueue_trial(
            kept,
            user_attrs=TrialRecord(warm_start=f"study {warm.source} trial {number}").to_attrs(),
            skip_if_exists=True,
        )
        enqueued.append(number)
    summary = {"study": warm.source, "top": warm.top, "enqueued": enqueued, "dropped": dropped}
    study.set_user_attr("warm_start", summary)
    log.info(
        "study %s warm-starts from study %s: trials %s enqueued%s",
        study.study_name,
        warm.source,
        enqueued,
        f"; dropped {'; '.join(dropped)}" if dropped else "",
    )
    return summary
