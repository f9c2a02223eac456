"""Consent: append-only consent ledger, derived consent state, subject restriction."""

import sqlalchemy as sa
from alembic import op

from vault.store.ddl import (
    BIGINT,
    actor,
    append_only,
    bigints,
    serial,
    string_key,
    subject,
    subject_key,
    tenant,
    timestamp,
)

revision = "0002"
down_revision = "0001"

APPEND_ONLY_MESSAGE = "vault consent ledger is append-only"


def upgrade() -> None:
    op.create_table(
        "consent_events",
        serial("seq"),
        sa.Column("event_id", sa.String(64), nullable=False),
        tenant(),
        subject(),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("regime", sa.String(32), nullable=False),
        sa.Column("jurisdiction", sa.String(16)),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("notice_id", sa.String(64)),
        sa.Column("notice_version", BIGINT),
        sa.Column("notice_hash", sa.String(64)),
        timestamp("occurred_at"),
        timestamp("expires_at", nullable=True),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("evidence", sa.String(255)),
        sa.Column("conflict", sa.String(64)),
        actor(),
        sa.Column("receipt", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.UniqueConstraint("event_id", name="uq_consent_events_event_id"),
    )
    op.create_index("ix_consent_events_key", "consent_events",
                    ["tenant", "subject_id", "purpose", "scope", "seq"])
    op.create_index("ix_consent_events_occurred", "consent_events", ["occurred_at"])
    op.create_table(
        "consent_state",
        *subject_key(),
        string_key("purpose", 64),
        string_key("scope", 32),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("regime", sa.String(32), nullable=False),
        sa.Column("notice_id", sa.String(64)),
        sa.Column("notice_version", BIGINT),
        timestamp("expires_at", nullable=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        *bigints("event_seq"),
        timestamp("updated_at"),
    )
    with op.batch_alter_table("subjects") as batch:
        batch.add_column(timestamp("restricted_at", nullable=True))
        batch.add_column(sa.Column("restriction_reason", sa.String(64)))
    append_only("consent_events", "vault_consent_append_only", APPEND_ONLY_MESSAGE)


def downgrade() -> None:
    raise NotImplementedError("the consent ledger cannot be downgraded: it is evidence")
