"""What the report reads of a study and its trials: the record, the finished, the best."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from optuna.trial import FrozenTrial, TrialState

from service.store.tables import StudyStatus
from trainer import best_first

log = logging.getLogger("regtune.report")


class StudyLike(Protocol):
    """What the report reads of a study: ``service.store.tables.StudyRecord`` has all of it."""

    id: str
    name: str
    spec: dict[str, Any]
    status: StudyStatus
    metric: str
    direction: str
    n_trials: int
    test_score: float | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


# --- reading the trials -----------------------------------------------------------------------


def completed(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]


def best_of(trials: Sequence[FrozenTrial], direction: str) -> FrozenTrial | None:
    """The best completed trial (the lowest number among equals), as the status endpoint."""
    done = completed(trials)
    if not done:
        return None
    sign = best_first(direction)
    return min(done, key=lambda t: (sign * float(t.value or 0.0), t.number))


def metric_label(record: StudyLike) -> str:
    better = "higher" if record.direction == "maximize" else "lower"
    return f"{record.metric} ({better} is better)"
