"""Every setting of the service, from ``REGTUNE_*`` environment variables or the command line."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer import Limits


class Settings(BaseSettings):
    """``REGTUNE_DATABASE_URL`` sets ``database_url``, and so on for each field."""

    model_config = SettingsConfigDict(
        env_prefix="REGTUNE_", env_nested_delimiter="__", extra="ignore"
    )

    database_url: str = "sqlite:///./regtune.db"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int | None = Field(
        None, ge=0, description="embedded workers; default one per GPU, else one"
    )
    device: str = "auto"
    threads: int = Field(1, ge=1, description="torch CPU threads per worker process")
    population: int | None = Field(
        None,
        ge=1,
        description="trials a worker trains at once as one stacked model (MLPs and CNNs); "
        "default: 2 on a CPU, as many as fit in memory on a GPU",
    )
    compile: bool | None = Field(
        None,
        description="compile the population's step with torch.compile (CUDA graphs on a GPU); "
        "default: on a GPU only",
    )

    # Uploads are validated completely before anything is stored.
    max_upload_bytes: int = 50 * 1024 * 1024
    max_upload_rows: int = 1_000_000
    max_upload_columns: int = 10_000
    max_upload_memory_bytes: int = Field(
        1024**3,
        ge=1,
        description="bytes an upload's arrays may take once read (an NPZ is compressed: "
        "its declared shapes are checked before anything is decompressed)",
    )

    # What one study may ask for: REGTUNE_LIMITS__MAX_TRIALS=500 and so on.
    limits: Limits = Limits()
    max_active_studies: int = Field(
        100,
        ge=1,
        description="queued or running studies one tenant may have at once; "
        "a submission beyond it is answered 429",
    )

    # Pollers: a study's status is recomputed at most every `status_cache_s` per API process;
    # a token's tenant is looked up at most every `auth_cache_s` (service/http/cache.py).
    status_cache_s: float = Field(1.0, ge=0)
    auth_cache_s: float = Field(5.0, ge=0)
    # Training is batch work: on a machine shared with the API it yields the CPU first.
    worker_nice: int = Field(10, ge=0, le=19, description="os.nice increment of worker processes")
    worker_idle_priority: bool = Field(
        False,
        description="run workers under Linux's SCHED_IDLE: they get only CPU time nothing else "
        "wants (the API's latency under load; but a machine busy with other work starves them)",
    )

    # Crash safety: a running trial beats every `heartbeat_s`; one silent for `grace_s` is failed.
    heartbeat_s: int = Field(5, ge=1)
    grace_s: int = Field(30, ge=2)
    poll_s: float = Field(1.0, gt=0, description="how often an idle worker looks for work")

    # PostgreSQL connections per process: many workers must not exhaust the server.
    pool_size: int = Field(2, ge=1)
    max_overflow: int = Field(2, ge=0)
    # A worker cut off from PostgreSQL in the middle of a transaction keeps its row locks (its
    # trial's, taken FOR UPDATE by every Optuna write), and the worker that would fail that
    # trial waits on them, until the server notices the lost client: hours of TCP retries. The
    # server ends a session idle inside a transaction for this long instead, releasing them.
    pg_idle_in_transaction_s: float = Field(
        60.0,
        gt=0,
        description="PostgreSQL's idle_in_transaction_session_timeout for regtune's sessions",
    )
