"""Retention: per-record expiry, subject events, legal holds, sweep runs, shred queue."""

import sqlalchemy as sa
from alembic import op

from vault.store.ddl import (
    actor,
    bigints,
    record_ref,
    string_key,
    subject,
    subject_key,
    tenant,
    timestamp,
    timestamps,
)

revision = "0003"
down_revision = "0002"

HOLDS_MESSAGE = "legal holds are lifted, never deleted"


def upgrade() -> None:
    op.create_table(
        "retention",
        record_ref("retention", primary_key=True),
        tenant(),
        subject(),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("category", sa.String(64)),
        sa.Column("action", sa.String(16)),
        *timestamps("expires_at", "purge_at", "shred_at", nullable=True),
    )
    op.create_index("ix_retention_expires_at", "retention", ["expires_at", "record_id"])
    op.create_index("ix_retention_tenant_subject", "retention", ["tenant", "subject_id"])
    op.create_table(
        "retention_subjects",
        *subject_key(),
        *timestamps("last_interaction", "contract_end", "consent_withdrawn", nullable=True),
        sa.Column("shred_due", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "legal_holds",
        string_key("id", 64),
        tenant(),
        subject(nullable=True),
        sa.Column("reason", sa.String(200), nullable=False),
        actor("placed_by"),
        timestamp("placed_at"),
        *timestamps("until", "lifted_at", nullable=True),
        actor("lifted_by", nullable=True),
    )
    op.create_index("ix_legal_holds_tenant_subject", "legal_holds", ["tenant", "subject_id"])
    op.create_table(
        "retention_runs",
        string_key("id", 64),
        timestamp("started_at"),
        timestamp("finished_at", nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        actor(),
        *bigints("batches", "records_deleted", "records_pruned", "records_anonymised",
                 "subjects_shredded", "held"),
    )
    op.create_index("ix_retention_runs_started_at", "retention_runs", ["started_at"])
    op.create_table(
        "retention_shred_queue",
        *subject_key(),
        timestamp("queued_at"),
        sa.Column("run_id", sa.String(64), nullable=False),
    )
    _holds_never_deleted()


def _holds_never_deleted() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("CREATE TRIGGER legal_holds_no_delete BEFORE DELETE ON legal_holds "
                   f"BEGIN SELECT RAISE(ABORT, '{HOLDS_MESSAGE}'); END")
    elif dialect == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION vault_legal_holds_kept() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION '{HOLDS_MESSAGE}' USING ERRCODE = 'insufficient_privilege'; "
            "END $$"
        )
        op.execute("CREATE TRIGGER legal_holds_no_delete BEFORE DELETE ON legal_holds "
                   "FOR EACH ROW EXECUTE FUNCTION vault_legal_holds_kept()")
        op.execute("CREATE TRIGGER legal_holds_no_truncate BEFORE TRUNCATE ON legal_holds "
                   "FOR EACH STATEMENT EXECUTE FUNCTION vault_legal_holds_kept()")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS legal_holds_no_delete")
    for table in ("retention_shred_queue", "retention_runs", "legal_holds",
                  "retention_subjects", "retention"):
        op.drop_table(table)
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS vault_legal_holds_kept()")
