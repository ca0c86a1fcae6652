"""dataset columns: a CSV's column treatments and the rows dropped for a blank target

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("regtune_datasets") as batch:
        batch.add_column(sa.Column("columns", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(
            sa.Column("dropped_rows", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("regtune_datasets") as batch:
        batch.drop_column("dropped_rows")
        batch.drop_column("columns")
