"""job_rollups indexed by (period_s, period_start): a read takes each grain's periods from the window's start
by range, not every row of the table

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_job_rollups_grain", "job_rollups", ["period_s", "period_start"])
    op.drop_index("ix_job_rollups_period_start", table_name="job_rollups")


def downgrade() -> None:
    op.create_index("ix_job_rollups_period_start", "job_rollups", ["period_start"])
    op.drop_index("ix_job_rollups_grain", table_name="job_rollups")
