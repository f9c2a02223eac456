"""Consent: append-only consent ledger, derived consent state, subject restriction."""

import sqlalchemy as sa
from alembic import op

from vault.store.base import UTCDateTime
from vault.store.ddl import append_only

revision = "0002"
down_revision = "0001"

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

APPEND_ONLY_MESSAGE = "vault consent ledger is append-only"


def upgrade() -> None:
    op.create_table(
        "consent_events",
        sa.Column("seq", BIGINT, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("regime", sa.String(32), nullable=False),
        sa.Column("jurisdiction", sa.String(16)),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("notice_id", sa.String(64)),
        sa.Column("notice_version", BIGINT),
        sa.Column("notice_hash", sa.String(64)),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("evidence", sa.String(255)),
        sa.Column("conflict", sa.String(64)),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("receipt", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.UniqueConstraint("event_id", name="uq_consent_events_event_id"),
    )
    op.create_index("ix_consent_events_key", "consent_events",
                    ["tenant", "subject_id", "purpose", "scope", "seq"])
    op.create_index("ix_consent_events_occurred", "consent_events", ["occurred_at"])
    op.create_table(
        "consent_state",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(64), primary_key=True),
        sa.Column("scope", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("regime", sa.String(32), nullable=False),
        sa.Column("notice_id", sa.String(64)),
        sa.Column("notice_version", BIGINT),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_seq", BIGINT, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("subjects") as batch:
        batch.add_column(sa.Column("restricted_at", UTCDateTime()))
        batch.add_column(sa.Column("restriction_reason", sa.String(64)))
    append_only("consent_events", "vault_consent_append_only", APPEND_ONLY_MESSAGE)


def downgrade() -> None:
    raise NotImplementedError("the consent ledger cannot be downgraded: it is evidence")
