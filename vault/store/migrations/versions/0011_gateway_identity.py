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

from vault.store.ddl import actor, string_key, tenant, timestamp, timestamps

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.create_table(
        "gateway_idempotency",
        tenant(primary_key=True),
        actor(primary_key=True),
        string_key("idem_key", 128),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("response", sa.Text()),
        timestamp("created_at"),
    )
    op.create_table(
        "gateway_rate_limits",
        string_key("bucket", 160),
        sa.Column("window", sa.BigInteger(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "identity_api_keys",
        string_key("id", 32),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        actor(),
        tenant(),
        sa.Column("region", sa.String(16)),
        sa.Column("recipient", sa.String(128)),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        timestamp("created_at"),
        *timestamps("expires_at", "revoked_at", nullable=True),
    )
    op.create_table(
        "identity_totp",
        string_key("key_id", 32),
        sa.Column("secret_box", sa.LargeBinary(), nullable=False),
        timestamp("created_at"),
    )
    op.create_table(
        "identity_totp_used",
        string_key("key_id", 32),
        sa.Column("counter", sa.BigInteger(), primary_key=True),
        timestamp("used_at"),
    )


def downgrade() -> None:
    op.drop_table("identity_totp_used")
    op.drop_table("identity_totp")
    op.drop_table("identity_api_keys")
    op.drop_table("gateway_rate_limits")
    op.drop_table("gateway_idempotency")
