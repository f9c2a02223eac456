"""Separation of duties: rule changes that grant a data action wait for a second
administrator (``policy_changes``; rows are decided, never deleted).
"""

import sqlalchemy as sa
from alembic import op

from vault.store.base import UTCDateTime

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "policy_changes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("role", sa.String(255), nullable=False),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("obj", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(255), nullable=False),
        sa.Column("effect", sa.String(8), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(128)),
        sa.Column("decided_at", UTCDateTime()),
    )


def downgrade() -> None:
    op.drop_table("policy_changes")
