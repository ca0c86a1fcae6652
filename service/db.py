"""One database for everything: engines, sessions, and the schema's migrations.

SQLite (the embedded default) runs in WAL mode with a busy timeout so that the API and
several worker processes share one file; write transactions start with ``BEGIN IMMEDIATE``
so that two writers queue on the busy timeout instead of failing on a lock upgrade.
PostgreSQL connections are pooled small per process, so many workers cannot exhaust the
server's ``max_connections``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings

SQLITE_BUSY_TIMEOUT_S = 30
MIGRATIONS = Path(__file__).parent / "migrations"
# Optuna keeps its own Alembic history in `alembic_version`; ours must not collide with it.
VERSION_TABLE = "regtune_alembic_version"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def engine_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection options shared by our engine and Optuna's RDBStorage engine."""
    if is_sqlite(settings.database_url):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
    return {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
    }


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
        """Bring the service's tables to the newest revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()
