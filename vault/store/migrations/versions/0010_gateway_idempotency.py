"""The gateway's shared state, so that its replicas hold none of their own:
``gateway_idempotency``, one row per (tenant, actor, Idempotency-Key) of a
create, holding a keyed digest of the request and the ids it created (never a
value); ``gateway_rate_limits``, request counters per credential and minute.

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


    op.create_table(
        "gateway_rate_limits",
        sa.Column("bucket", sa.String(160), primary_key=True),
        sa.Column("window", sa.BigInteger(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_rate_limits")
    op.drop_table("gateway_idempotency")
