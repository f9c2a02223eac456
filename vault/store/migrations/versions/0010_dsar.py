"""Data-subject requests: ``dsar_requests`` and the append-only ``dsar_events``.

The history of every request is append-only, like the audit log: triggers
refuse UPDATE and DELETE on SQLite, and UPDATE, DELETE and TRUNCATE on
PostgreSQL (enabled ALWAYS, so ``session_replication_role = replica`` does not
switch them off).

Revision ID: 0010_dsar
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vault.store.base import UTCDateTime

revision = "0010_dsar"
down_revision = "0009"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
APPEND_ONLY_MESSAGE = "vault dsar history is append-only"


def upgrade() -> None:
    op.create_table(
        "dsar_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("right", sa.String(64), nullable=False),
        sa.Column("regime", sa.String(32), nullable=False),
        sa.Column("jurisdiction", sa.String(16)),
        sa.Column("subject_id", sa.String(64)),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("agent", sa.String(128)),
        sa.Column("agent_authorisation", sa.String(128)),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("received_on", sa.Date(), nullable=False),
        sa.Column("acknowledge_by", sa.Date()),
        sa.Column("acknowledged_at", UTCDateTime()),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("first_due_on", sa.Date(), nullable=False),
        sa.Column("extended", sa.Boolean(), nullable=False),
        sa.Column("notified_at", UTCDateTime()),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("verification", sa.String(32), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("identifier_digests", sa.Text(), nullable=False),
        sa.Column("identifiers_sealed", sa.LargeBinary()),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("reject_reason", sa.String(64)),
        sa.Column("closed_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_dsar_requests_tenant_state", "dsar_requests", ["tenant", "state"])
    op.create_index("ix_dsar_requests_subject", "dsar_requests", ["tenant", "subject_id"])
    op.create_table(
        "dsar_events",
        sa.Column("seq", BIGINT, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(32)),
        sa.Column("to_state", sa.String(32)),
        sa.Column("reason", sa.String(255)),
    )
    op.create_index("ix_dsar_events_request", "dsar_events", ["request_id", "seq"])
    _append_only_triggers()


def _append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER dsar_events_no_{verb.lower()} BEFORE {verb} ON dsar_events "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION vault_dsar_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}' USING ERRCODE = 'insufficient_privilege'; "
            "END $$"
        )
        op.execute(
            "CREATE TRIGGER dsar_events_no_update_delete BEFORE UPDATE OR DELETE "
            "ON dsar_events FOR EACH ROW EXECUTE FUNCTION vault_dsar_append_only()"
        )
        op.execute(
            "CREATE TRIGGER dsar_events_no_truncate BEFORE TRUNCATE ON dsar_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION vault_dsar_append_only()"
        )
        op.execute("ALTER TABLE dsar_events ENABLE ALWAYS TRIGGER dsar_events_no_update_delete")
        op.execute("ALTER TABLE dsar_events ENABLE ALWAYS TRIGGER dsar_events_no_truncate")


def downgrade() -> None:
    op.drop_table("dsar_events")  # its triggers go with it
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS vault_dsar_append_only()")
    op.drop_index("ix_dsar_requests_subject", "dsar_requests")
    op.drop_index("ix_dsar_requests_tenant_state", "dsar_requests")
    op.drop_table("dsar_requests")
