"""Retention: the fingerprint of what stored expiries were computed from.

``retention_fingerprints`` gets a row each time every record's expiry has been
recomputed for a changed schedule, schema categories or jurisdiction map (see
``RetentionService.fingerprint``); the newest row is the one in force. Rows are
only ever added, so the application role needs INSERT and SELECT on it and
nothing on ``vault_meta``.
"""

import sqlalchemy as sa
from alembic import op

from vault.store.base import UTCDateTime

revision = "0006"
down_revision = "0005"

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "retention_fingerprints",
        sa.Column("id", BIGINT, primary_key=True, autoincrement=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("retention_fingerprints")
