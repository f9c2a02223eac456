"""The gateway's idempotency keys: ``gateway_idempotency``, one row per
(tenant, actor, Idempotency-Key) of a create, holding a keyed digest of the
request and the ids it created (never a value), so that every replica answers a
retried create with the first answer.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vault.store.base import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_idempotency",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("actor", sa.String(128), primary_key=True),
        sa.Column("idem_key", sa.String(128), primary_key=True),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_idempotency")
