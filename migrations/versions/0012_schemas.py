"""schemas: one copy of each JSON Schema by its hash; jobs.schema nullable (new rows keep only the hash,
older rows their copy until retention deletes them), and an index on jobs.schema_hash

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schemas",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_schemas_used_at", "schemas", ["used_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("schema", existing_type=sa.JSON(), nullable=True)
    op.create_index("ix_jobs_schema_hash", "jobs", ["schema_hash"])


def downgrade() -> None:
    op.drop_index("ix_jobs_schema_hash", table_name="jobs")
    op.execute(
        "UPDATE jobs SET schema = (SELECT s.schema FROM schemas s WHERE s.hash = jobs.schema_hash) "
        "WHERE schema IS NULL"
    )
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("schema", existing_type=sa.JSON(), nullable=False)
    op.drop_table("schemas")
