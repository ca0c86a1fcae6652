"""Response bodies of the HTTP API (request bodies are the trainer's ``StudySpec``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from trainer import BestTrial, ParetoTrial, TrialRecord

if TYPE_CHECKING:  # the CLI's HTTP client parses these models: it must not load Optuna
    from optuna.trial import FrozenTrial

T = TypeVar("T")


class ErrorOut(BaseModel):
    """An error other than a validation error: ``{"detail": "what is wrong"}``."""

    detail: str


class ColumnOut(BaseModel):
    """How an uploaded CSV's feature column is used."""

    name: str
    treatment: Literal["numeric", "categorical", "dropped"]
    imputed: int | None = Field(
        None, description="numeric: blank cells, imputed per fold (with a missing indicator)"
    )
    levels: list[str] | None = Field(None, description="categorical: its levels ('' = blank)")
    reason: str | None = Field(None, description="dropped: why")


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    format: str
    target: str | None
    task: str
    n_samples: int
    n_features: int = Field(description="the network's inputs, after one-hot encoding")
    classes: list[int | float | str] = Field(description="class labels, of the target's type")
    input_shape: list[int]
    columns: list[ColumnOut] = Field(description="a CSV's feature columns; [] for an NPZ")
    dropped_rows: int = Field(description="rows left out for a blank target")
    sha256: str
    size_bytes: int
    created_at: datetime


class StudyCreated(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: str
    created_at: datetime


class StudyItem(StudyCreated):
    dataset: str
    n_trials: int
    finished_at: datetime | None


def utc(local: datetime | None) -> datetime | None:
    """Optuna's naive local time as aware UTC: written with a "Z", as study times are."""
    return None if local is None else local.astimezone(UTC)


class TrialOut(BaseModel):
    number: int
    state: str = Field(
        description="complete, pruned, fail, running, waiting; retried (failed, then its "
        "parameters queued again: its re-run is another trial) or cancelled (stopped with "
        "its study)"
    )
    value: float | None = Field(description="the metric (a trade-off study's first objective)")
    params: dict[str, Any]
    cv_std: float | None
    diagnosis: str | None
    fail_reason: str | None
    datetime_start: datetime | None
    datetime_complete: datetime | None
    duration_s: float | None

    @classmethod
    def of(cls, trial: FrozenTrial, state: str) -> TrialOut:
        """``state``: the trial's listed state (``service.store.trials.listed_state``)."""
        return cls(
            number=trial.number,
            state=state,
            value=trial.values[0] if trial.values else None,
            params=trial.params,
            **TrialRecord.of(trial).fields_of(TrialOut),
            datetime_start=utc(trial.datetime_start),
            datetime_complete=utc(trial.datetime_complete),
            duration_s=trial.duration.total_seconds() if trial.duration else None,
        )


class TrialDetail(TrialOut):
    """One trial with its per-fold results, learning curves and diagnosis."""

    config: dict[str, Any] | None
    fold_scores: list[float] | None
    best_epochs: list[int] | None
    train_loss: list[list[float]] | None
    val_loss: list[list[float]] | None
    fold_diagnoses: list[str] | None
    l1_sparsity: float | None
    n_params: int | None
    nonzero_params: float | None = Field(
        description="parameters with |θ| ≥ 1e-3 at the kept epoch, mean over folds"
    )
    engine: str | None = Field(description="population or per-trial")
    engine_note: str | None = Field(description="why the trial did not train stacked")
    intermediate_values: dict[int, float]

    @classmethod
    def of(cls, trial: FrozenTrial, state: str) -> TrialDetail:
        listed = TrialOut.of(trial, state).model_dump()
        recorded = TrialRecord.of(trial).fields_of(TrialDetail)
        return cls(**(listed | recorded), intermediate_values=trial.intermediate_values)


class StudyOut(BaseModel):
    id: str
    name: str
    dataset: str
    network: dict[str, Any] = Field(
        description="the network: a template's settings, the layers, or a plugin's name, "
        "options, package and version (null where the API host does not have it)"
    )
    status: str
    metric: str
    direction: str
    n_trials: int
    trials: dict[str, int]
    progress: float
    eta_s: float | None
    queue_position: int | None = Field(
        None,
        description="a queued study's place in its tenant's queue (1: next; by priority, then "
        "age); null once it runs",
    )
    workers: int = Field(0, description="workers serving the study now")
    priority: int = Field(0, description="the spec's priority among the tenant's studies")
    best: BestTrial | None
    trade_off: str | None = Field(
        None, description="objective.trade_off: the second objective (network size), minimized"
    )
    pareto: list[ParetoTrial] | None = Field(
        None,
        description="a trade-off study's Pareto front: the completed trials no other beats on "
        "both objectives, best metric first; null for a single-objective study",
    )
    chosen: int | None = Field(
        None,
        description="the trial final_model.pick chooses (refitted and served), where it is "
        "not the best by the metric",
    )
    test_score: float | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int
