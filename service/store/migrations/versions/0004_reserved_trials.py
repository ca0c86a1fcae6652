"""reserved trials: the budget taken so far, reserved atomically before each trial is created

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("regtune_studies") as batch:
        batch.add_column(sa.Column("reserved", sa.Integer(), nullable=False, server_default="0"))
    if not sa.inspect(op.get_bind()).has_table("trials"):
        return  # a new database: Optuna's tables come after ours, and no study exists yet
    # A study that already has trials has spent that much of its budget: every trial of its
    # Optuna study but the re-runs (Optuna marks a re-run with the system attribute
    # "failed_trial").
    op.execute(
        """
        UPDATE regtune_studies SET reserved = (
            SELECT count(*) FROM trials
            WHERE trials.study_id = regtune_studies.optuna_id
              AND NOT EXISTS (
                SELECT 1 FROM trial_system_attributes a
                WHERE a.trial_id = trials.trial_id AND a.key = 'failed_trial'
              )
        )
        WHERE optuna_id IS NOT NULL
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("regtune_studies") as batch:
        batch.drop_column("reserved")
