"""Alembic environment: migrations run on the connection the service hands over."""

from __future__ import annotations

from alembic import context

from service.store.db import VERSION_TABLE
from service.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
