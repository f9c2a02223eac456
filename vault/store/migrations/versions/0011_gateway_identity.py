"""The gateway's shared state, so that its replicas hold none of their own:
``gateway_idempotency``, one row per (tenant, actor, Idempotency-Key) of a
create, holding a keyed digest of the request and the ids it created (never a
value); ``gateway_rate_limits``, request counters per credential and minute;
and the credentials of ``vault.identity``: ``identity_api_keys`` (a keyed hash
of each secret, never the secret), ``identity_totp`` (TOTP secrets, encrypted)
and ``identity_totp_used`` (the codes used, so that a replay is refused).
"""

import sqlalchemy as sa
from alembic import op

from vault.store.base import UTCDateTime

revision = "0011"
down_revision = "0010"


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


    op.create_table(
        "identity_api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("region", sa.String(16), nullable=True),
        sa.Column("recipient", sa.String(128), nullable=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "identity_totp",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("secret_box", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "identity_totp_used",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("counter", sa.BigInteger(), primary_key=True),
        sa.Column("used_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("identity_totp_used")
    op.drop_table("identity_totp")
    op.drop_table("identity_api_keys")
    op.drop_table("gateway_rate_limits")
    op.drop_table("gateway_idempotency")
