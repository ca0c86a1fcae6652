"""artifacts: a study's final model, stored in the database

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "regtune_artifacts",
        sa.Column("study_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["regtune_studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_id", "kind"),
    )


def downgrade() -> None:
    op.drop_table("regtune_artifacts")
