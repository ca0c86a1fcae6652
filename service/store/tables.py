"""The service's own tables, prefixed `regtune_`: Optuna keeps its own (`studies`, `trials`…)
in the same database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column

StudyStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
ACTIVE: tuple[StudyStatus, ...] = ("queued", "running")
FINAL: tuple[StudyStatus, ...] = ("completed", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored, the token itself is shown once."""

    __tablename__ = "regtune_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str] = mapped_column(String(200), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DatasetRecord(Base):
    """An uploaded dataset, validated and stored as a normalized NPZ (see
    :func:`service.store.uploads.to_npz`)."""

    __tablename__ = "regtune_datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(8))
    target: Mapped[str | None] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(16))
    n_samples: Mapped[int] = mapped_column(Integer)
    n_features: Mapped[int] = mapped_column(Integer)
    classes: Mapped[list[Any]] = mapped_column(JSON)
    input_shape: Mapped[list[Any]] = mapped_column(JSON)
    # A CSV's columns and their treatment (numeric, categorical and its levels, dropped and
    # why, cells imputed); rows left out for a blank target.
    columns: Mapped[list[Any]] = mapped_column(JSON, default=list)
    dropped_rows: Mapped[int] = mapped_column(Integer, default=0)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Workers on other hosts read the data from the database: it is the one shared store.
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary))


class StudyRecord(Base):
    """A submitted study: its spec, owner and lifecycle. Its trials live in Optuna's tables."""

    __tablename__ = "regtune_studies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[StudyStatus] = mapped_column(String(16), index=True, default="queued")
    optuna_name: Mapped[str] = mapped_column(String(100), unique=True)
    optuna_id: Mapped[int | None] = mapped_column(Integer, index=True)
    n_trials: Mapped[int] = mapped_column(Integer)
    # Trials of the budget taken so far (fresh ones and warm starts, not re-runs): each is
    # reserved here by a conditional UPDATE before it is created (lifecycle.reserve_trial).
    reserved: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The spec's priority: orders this tenant's studies for the workers (scheduling.py).
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    metric: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(8))
    error: Mapped[str | None] = mapped_column(Text)
    test_score: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ArtifactRecord(Base):
    """A file a study produced, e.g. its final model (``kind`` "model": a ``torch.save`` file
    of trainer.model_file). In the database, so that every worker and API process reaches it;
    deleted with its study."""

    __tablename__ = "regtune_artifacts"

    study_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("regtune_studies.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))


class WorkerRecord(Base):
    """A worker process, for operators: where it runs, what it does, when it last beat."""

    __tablename__ = "regtune_workers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    stopped: Mapped[bool] = mapped_column(Boolean, default=False)
