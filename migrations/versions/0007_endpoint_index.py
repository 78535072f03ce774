"""index on jobs (status, endpoint): the jobs running on each inference endpoint, for /metrics, /readyz and
/v1/stats. A job's model and backend labels stay as they were: a queued job without a backend runs with
its model's first backend in the endpoint registry.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_status_endpoint", "jobs", ["status", "endpoint"])


def downgrade() -> None:
    op.drop_index("ix_jobs_status_endpoint", table_name="jobs")
