"""job_rollups, job_totals and rollup_mark: finished jobs counted per period and group, the all-time totals
of /metrics, and how far they reach (irq/store/rollups.py); the jobs finished so far are rolled up by the
first sweep

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_rollups",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_s", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("backend", sa.String(50), nullable=False),
        sa.Column("endpoint", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
    )
    op.create_index("ix_job_rollups_period_start", "job_rollups", ["period_start"])
    op.create_table(
        "job_totals",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("backend", sa.String(50), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("error_code", sa.String(64), primary_key=True),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
    )
    op.create_table(
        "rollup_mark",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rolled_until", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rollup_mark")
    op.drop_table("job_totals")
    op.drop_index("ix_job_rollups_period_start", table_name="job_rollups")
    op.drop_table("job_rollups")
