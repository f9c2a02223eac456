"""Retention: the shred queue takes one row per sweep batch; runs record their tenant.

``retention_shred_batches`` holds, per batch that removed subjects' last
records, the list of those subjects (one row written with the batch instead of
one per subject). ``retention_runs.tenant`` is the tenant a run was limited to
(NULL: every tenant, and every run made before this revision).
"""

import sqlalchemy as sa
from alembic import op

from vault.store.ddl import serial, tenant, texts, timestamp

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "retention_shred_batches",
        serial(),
        tenant(),
        sa.Column("run_id", sa.String(64), nullable=False),
        timestamp("queued_at"),
        *texts("subjects"),
    )
    with op.batch_alter_table("retention_runs") as batch:
        batch.add_column(sa.Column("tenant", sa.String(128)))
    op.create_index("ix_retention_runs_tenant_started_at", "retention_runs",
                    ["tenant", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_retention_runs_tenant_started_at", "retention_runs")
    with op.batch_alter_table("retention_runs") as batch:
        batch.drop_column("tenant")
    op.drop_table("retention_shred_batches")
