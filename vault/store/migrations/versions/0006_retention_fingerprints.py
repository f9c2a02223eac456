"""Retention: the fingerprint of what stored expiries were computed from.

``retention_fingerprints`` gets a row each time every record's expiry has been
recomputed for a changed schedule, schema categories or jurisdiction map (see
``RetentionService.fingerprint``); the newest row is the one in force. Rows are
only ever added, so the application role needs INSERT and SELECT on it and
nothing on ``vault_meta``.
"""

import sqlalchemy as sa
from alembic import op

from vault.store.ddl import serial, timestamp

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "retention_fingerprints",
        serial(),
        timestamp("recorded_at"),
        sa.Column("fingerprint", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("retention_fingerprints")
