"""a job's deadline counts from its first start

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("first_started_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE jobs SET first_started_at = started_at")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("deadline_at")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE jobs SET deadline_at = created_at")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("first_started_at")
