"""One database for everything: engines, sessions, and the schema's migrations.

SQLite (the embedded default) runs in WAL mode with a busy timeout so that the API and
several worker processes share one file; write transactions start with ``BEGIN IMMEDIATE``
so that two writers queue on the busy timeout instead of failing on a lock upgrade.
PostgreSQL connections are pooled small per process, so many workers cannot exhaust the
server's ``max_connections``.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from alembic import command
from alembic.config import Config
from optuna.storages import RDBStorage
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings

# What a lost or busy database raises (Optuna wraps some driver errors in its own type).
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    DBAPIError,
    optuna.exceptions.StorageInternalError,
)

SQLITE_BUSY_TIMEOUT_S = 30
MIGRATIONS = Path(__file__).parent / "migrations"
# Optuna keeps its own Alembic history in `alembic_version`; ours must not collide with it.
VERSION_TABLE = "regtune_alembic_version"
SCHEMA_LOCK_KEY = 0x7265677475  # "regtu": any constant shared by every regtune process


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def engine_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection options shared by our engine and Optuna's RDBStorage engine."""
    if is_sqlite(settings.database_url):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
    idle_ms = round(settings.pg_idle_in_transaction_s * 1000)
    return {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "connect_args": {"options": f"-c idle_in_transaction_session_timeout={idle_ms}"},
    }


def connections_per_process(settings: Settings) -> int:
    """The most PostgreSQL connections one API or worker process opens.

    Two pools of ``pool_size + max_overflow``: ours and Optuna's storage. N processes stay
    within N times this, whatever the load; size the server's ``max_connections`` by it.
    """
    return 2 * (settings.pool_size + settings.max_overflow)


def make_engine(settings: Settings) -> Engine:
    engine = create_engine(settings.database_url, **engine_kwargs(settings))
    if is_sqlite(settings.database_url):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


class Database:
    """The engine and a session factory; ``write()`` for transactions that change rows."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.database_url
        self.engine = make_engine(settings)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction committed on success, rolled back on any error."""
        with self.sessions() as session, session.begin():
            if is_sqlite(self.url):
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session

    def migrate(self) -> None:
        """Create or upgrade every table: ours (Alembic) and Optuna's (idempotent).

        API and workers may start at once against a fresh database; the schema lock makes
        them take turns, so two processes never race to create the same table or type.
        """
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.schema_lock():
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
            optuna_tables = RDBStorage(self.url, engine_kwargs=engine_kwargs(self.settings))
            optuna_tables.engine.dispose()

    @contextmanager
    def schema_lock(self) -> Iterator[None]:
        """Across processes: an advisory lock on PostgreSQL, a lock file beside SQLite's."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
                try:
                    yield
                finally:
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY}
                    )
                    connection.commit()
            return
        path = make_url(self.url).database
        if not is_sqlite(self.url) or not path or path == ":memory:":
            yield
            return
        with open(f"{path}.schema-lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def dispose(self) -> None:
        self.engine.dispose()
