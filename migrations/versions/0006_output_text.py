"""jobs.output_text (the text of a failed generation that produced no document), jobs.retry_truncated and
jobs.bounded (a truncated job's retry under its schema bounded to the token budget), and the request
fingerprint of jobs and batches made with an idempotency key

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("output_text", sa.Text(), nullable=True))
    op.add_column(
        "jobs", sa.Column("retry_truncated", sa.Boolean(), nullable=False, server_default=sa.true())
    )
    op.add_column("jobs", sa.Column("bounded", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("jobs", sa.Column("request_hash", sa.String(64), nullable=True))
    op.add_column("batches", sa.Column("request_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("request_hash")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_hash")
        batch.drop_column("bounded")
        batch.drop_column("retry_truncated")
        batch.drop_column("output_text")
