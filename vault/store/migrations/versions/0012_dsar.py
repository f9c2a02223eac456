"""Data-subject requests: ``dsar_requests``, the append-only ``dsar_events``, and
``records.source`` (where a record came from).

The history of every request is append-only, like the audit log: triggers
refuse UPDATE, and DELETE while the request exists (its rows go only with the
request, when the request log is purged after ``request_log_retention``), and
TRUNCATE on PostgreSQL; a request can be deleted only once it is closed. On
PostgreSQL the triggers are enabled ALWAYS, so ``session_replication_role =
replica`` does not switch them off.
"""

import sqlalchemy as sa
from alembic import op

from vault.store.ddl import actor, serial, string_key, subject, tenant, texts, timestamp

revision = "0012"
down_revision = "0011"

APPEND_ONLY_MESSAGE = "vault dsar history is append-only"


def upgrade() -> None:
    # Where a record came from (GDPR Art. 15(1)(g)), answered in access exports.
    # Plain ADD COLUMN (no table rebuild on SQLite: the rows stay as they are).
    op.add_column("records", sa.Column("source", sa.String(64)))
    op.create_table(
        "dsar_requests",
        string_key("id", 64),
        tenant(),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("right", sa.String(64), nullable=False),
        sa.Column("regime", sa.String(32), nullable=False),
        sa.Column("jurisdiction", sa.String(16)),
        subject(nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        actor("agent", nullable=True),
        sa.Column("agent_authorisation", sa.String(128)),
        timestamp("received_at"),
        sa.Column("received_on", sa.Date(), nullable=False),
        sa.Column("acknowledge_by", sa.Date()),
        timestamp("acknowledged_at", nullable=True),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("first_due_on", sa.Date(), nullable=False),
        sa.Column("extended", sa.Boolean(), nullable=False),
        timestamp("notified_at", nullable=True),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("verification", sa.String(32), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        *texts("identifier_digests"),
        sa.Column("identifiers_sealed", sa.LargeBinary()),
        *texts("details", "result"),
        sa.Column("reject_reason", sa.String(64)),
        timestamp("closed_at", nullable=True),
        timestamp("created_at"),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_dsar_requests_tenant_state", "dsar_requests", ["tenant", "state"])
    op.create_index("ix_dsar_requests_subject", "dsar_requests", ["tenant", "subject_id"])
    op.create_table(
        "dsar_events",
        serial("seq"),
        sa.Column("request_id", sa.String(64), nullable=False),
        tenant(),
        timestamp("at"),
        actor(),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(32)),
        sa.Column("to_state", sa.String(32)),
        sa.Column("reason", sa.String(255)),
    )
    op.create_index("ix_dsar_events_request", "dsar_events", ["request_id", "seq"])
    _append_only_triggers()


_CLOSED = "('completed', 'partially_completed', 'rejected')"
KEPT_MESSAGE = "vault dsar request is open: it cannot be deleted"


def _append_only_triggers() -> None:
    # The history is never updated; its rows go only with their request (the
    # request log's purge after request_log_retention), and a request only once
    # it is closed.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("CREATE TRIGGER dsar_events_no_update BEFORE UPDATE ON dsar_events "
                   f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END")
        op.execute("CREATE TRIGGER dsar_events_no_delete BEFORE DELETE ON dsar_events "
                   "WHEN EXISTS (SELECT 1 FROM dsar_requests WHERE id = OLD.request_id) "
                   "BEGIN SELECT RAISE(ABORT, 'vault dsar history is append-only'); END")
        op.execute("CREATE TRIGGER dsar_requests_kept_open BEFORE DELETE ON dsar_requests "
                   f"WHEN OLD.state NOT IN {_CLOSED} "
                   f"BEGIN SELECT RAISE(ABORT, '{KEPT_MESSAGE}'); END")
    elif dialect == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION vault_dsar_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "IF TG_OP = 'DELETE' AND NOT EXISTS "
            "(SELECT 1 FROM dsar_requests WHERE id = OLD.request_id) THEN RETURN OLD; END IF; "
            "RAISE EXCEPTION 'vault dsar history is append-only' "
            "USING ERRCODE = 'insufficient_privilege'; END $$"
        )
        op.execute(
            "CREATE OR REPLACE FUNCTION vault_dsar_kept_open() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"IF OLD.state IN {_CLOSED} THEN RETURN OLD; END IF; "
            f"RAISE EXCEPTION '{KEPT_MESSAGE}' USING ERRCODE = 'insufficient_privilege'; "
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
        op.execute(
            "CREATE TRIGGER dsar_requests_kept_open BEFORE DELETE ON dsar_requests "
            "FOR EACH ROW EXECUTE FUNCTION vault_dsar_kept_open()"
        )
        op.execute(
            "CREATE TRIGGER dsar_requests_no_truncate BEFORE TRUNCATE ON dsar_requests "
            "FOR EACH STATEMENT EXECUTE FUNCTION vault_dsar_append_only()"
        )
        for table, trigger in (("dsar_events", "dsar_events_no_update_delete"),
                               ("dsar_events", "dsar_events_no_truncate"),
                               ("dsar_requests", "dsar_requests_kept_open"),
                               ("dsar_requests", "dsar_requests_no_truncate")):
            op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {trigger}")


def downgrade() -> None:
    op.drop_table("dsar_events")  # its triggers go with it
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS dsar_requests_kept_open ON dsar_requests")
        op.execute("DROP TRIGGER IF EXISTS dsar_requests_no_truncate ON dsar_requests")
        op.execute("DROP FUNCTION IF EXISTS vault_dsar_append_only()")
        op.execute("DROP FUNCTION IF EXISTS vault_dsar_kept_open()")
    op.drop_index("ix_dsar_requests_subject", "dsar_requests")
    op.drop_index("ix_dsar_requests_tenant_state", "dsar_requests")
    op.drop_table("dsar_requests")
    with op.batch_alter_table("records") as batch:
        batch.drop_column("source")
