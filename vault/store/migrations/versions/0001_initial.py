"""Initial schema: subjects, records, blind index, audit log with append-only triggers, policy."""

import sqlalchemy as sa
from alembic import op

from vault.store.base import UTCDateTime
from vault.store.ddl import append_only

revision = "0001"
down_revision = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

APPEND_ONLY_MESSAGE = "vault audit log is append-only"


def upgrade() -> None:
    op.create_table(
        "vault_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )
    op.create_table(
        "subjects",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("pseudonym", sa.String(64), nullable=False, index=True),
        sa.Column("jurisdiction", sa.String(16)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "records",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("envelopes", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", BIGINT, nullable=False),
    )
    op.create_index("ix_records_tenant_subject", "records", ["tenant", "subject_id"])
    op.create_index("ix_records_tenant_collection", "records", ["tenant", "collection"])
    op.create_table(
        "blind_index",
        sa.Column("id", BIGINT, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column(
            "record_id",
            sa.String(64),
            sa.ForeignKey(
                "records.id", ondelete="CASCADE", name="fk_blind_index_record_id_records"
            ),
            nullable=False,
        ),
    )
    op.create_index(
        "ix_blind_index_lookup", "blind_index", ["tenant", "collection", "field", "digest"]
    )
    op.create_index("ix_blind_index_record", "blind_index", ["record_id"])
    op.create_table(
        "audit_log",
        sa.Column("seq", BIGINT, primary_key=True, autoincrement=True),
        sa.Column("chain", BIGINT, nullable=False),
        sa.Column("chain_seq", BIGINT, nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("collection", sa.String(64)),
        sa.Column("record_ids", sa.Text(), nullable=False),
        sa.Column("subjects", sa.Text(), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("purpose", sa.String(64)),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("chain", "chain_seq", name="uq_audit_log_chain_chain_seq"),
        sa.UniqueConstraint("chain", "prev_hash", name="uq_audit_log_chain_prev_hash"),
    )
    op.create_index("ix_audit_log_ts", "audit_log", ["ts"])
    op.create_table(
        "audit_heads",
        sa.Column("chain", BIGINT, primary_key=True, autoincrement=False),
        sa.Column("length", BIGINT, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "casbin_rule",
        sa.Column("id", BIGINT, primary_key=True, autoincrement=True),
        sa.Column("ptype", sa.String(8), nullable=False),
        sa.Column("v0", sa.String(255)),
        sa.Column("v1", sa.String(255)),
        sa.Column("v2", sa.String(255)),
        sa.Column("v3", sa.String(255)),
        sa.Column("v4", sa.String(255)),
        sa.Column("v5", sa.String(255)),
    )
    op.create_table(
        "policy_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("version", BIGINT, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    append_only("audit_log", "vault_audit_append_only", APPEND_ONLY_MESSAGE)


def downgrade() -> None:
    raise NotImplementedError("the initial schema cannot be downgraded: the audit log is kept")
