"""Retention: per-record expiry, subject events, legal holds, sweep runs, shred queue."""

import sqlalchemy as sa
from alembic import op

from vault.store.base import UTCDateTime

revision = "0003"
down_revision = "0002"

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

HOLDS_MESSAGE = "legal holds are lifted, never deleted"


def upgrade() -> None:
    op.create_table(
        "retention",
        sa.Column("record_id", sa.String(64),
                  sa.ForeignKey("records.id", ondelete="CASCADE",
                                name="fk_retention_record_id_records"),
                  primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("category", sa.String(64)),
        sa.Column("action", sa.String(16)),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("purge_at", UTCDateTime()),
        sa.Column("shred_at", UTCDateTime()),
    )
    op.create_index("ix_retention_expires_at", "retention", ["expires_at", "record_id"])
    op.create_index("ix_retention_tenant_subject", "retention", ["tenant", "subject_id"])
    op.create_table(
        "retention_subjects",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("last_interaction", UTCDateTime()),
        sa.Column("contract_end", UTCDateTime()),
        sa.Column("consent_withdrawn", UTCDateTime()),
        sa.Column("shred_due", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("subject_id", sa.String(64)),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("placed_by", sa.String(128), nullable=False),
        sa.Column("placed_at", UTCDateTime(), nullable=False),
        sa.Column("until", UTCDateTime()),
        sa.Column("lifted_at", UTCDateTime()),
        sa.Column("lifted_by", sa.String(128)),
    )
    op.create_index("ix_legal_holds_tenant_subject", "legal_holds", ["tenant", "subject_id"])
    op.create_table(
        "retention_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("batches", BIGINT, nullable=False),
        sa.Column("records_deleted", BIGINT, nullable=False),
        sa.Column("records_pruned", BIGINT, nullable=False),
        sa.Column("records_anonymised", BIGINT, nullable=False),
        sa.Column("subjects_shredded", BIGINT, nullable=False),
        sa.Column("held", BIGINT, nullable=False),
    )
    op.create_index("ix_retention_runs_started_at", "retention_runs", ["started_at"])
    op.create_table(
        "retention_shred_queue",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("queued_at", UTCDateTime(), nullable=False),
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
