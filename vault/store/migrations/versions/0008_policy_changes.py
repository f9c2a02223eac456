"""Separation of duties: rule changes that grant a data action wait for a second
administrator (``policy_changes``; rows are decided, never deleted).
"""

import sqlalchemy as sa
from alembic import op

from vault.store.ddl import actor, string_key, timestamp

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "policy_changes",
        string_key("id", 32),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("role", sa.String(255), nullable=False),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("obj", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(255), nullable=False),
        sa.Column("effect", sa.String(8), nullable=False),
        actor("requested_by"),
        timestamp("requested_at"),
        sa.Column("state", sa.String(16), nullable=False),
        actor("decided_by", nullable=True),
        timestamp("decided_at", nullable=True),
    )


def downgrade() -> None:
    op.drop_table("policy_changes")
