"""Initial schema: subjects, records, blind index, audit log with append-only triggers, policy."""

import sqlalchemy as sa
from alembic import op

from vault.store.ddl import (
    BIGINT,
    actor,
    append_only,
    bigints,
    record_ref,
    serial,
    string_key,
    subject,
    subject_key,
    tenant,
    texts,
    timestamp,
    timestamps,
)

revision = "0001"
down_revision = None

APPEND_ONLY_MESSAGE = "vault audit log is append-only"


def upgrade() -> None:
    op.create_table(
        "vault_meta",
        string_key("key", 64),
        sa.Column("value", sa.String(255), nullable=False),
    )
    op.create_table(
        "subjects",
        *subject_key(),
        sa.Column("pseudonym", sa.String(64), nullable=False, index=True),
        sa.Column("jurisdiction", sa.String(16)),
        timestamp("created_at"),
    )
    op.create_table(
        "records",
        string_key("id", 64),
        tenant(),
        sa.Column("collection", sa.String(64), nullable=False),
        subject(),
        sa.Column("envelopes", sa.LargeBinary(), nullable=False),
        *timestamps("created_at", "updated_at"),
        *bigints("version"),
    )
    op.create_index("ix_records_tenant_subject", "records", ["tenant", "subject_id"])
    op.create_index("ix_records_tenant_collection", "records", ["tenant", "collection"])
    op.create_table(
        "blind_index",
        serial(),
        tenant(),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        record_ref("blind_index"),
    )
    op.create_index(
        "ix_blind_index_lookup", "blind_index", ["tenant", "collection", "field", "digest"]
    )
    op.create_index("ix_blind_index_record", "blind_index", ["record_id"])
    op.create_table(
        "audit_log",
        serial("seq"),
        *bigints("chain", "chain_seq"),
        timestamp("ts"),
        sa.Column("request_id", sa.String(64), nullable=False),
        tenant(),
        actor(),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("collection", sa.String(64)),
        *texts("record_ids", "subjects", "fields"),
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
        *bigints("length"),
        sa.Column("head_hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "casbin_rule",
        serial(),
        sa.Column("ptype", sa.String(8), nullable=False),
        *(sa.Column(f"v{i}", sa.String(255)) for i in range(6)),
    )
    op.create_table(
        "policy_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        *bigints("version"),
        timestamp("updated_at"),
    )
    append_only("audit_log", "vault_audit_append_only", APPEND_ONLY_MESSAGE)


def downgrade() -> None:
    raise NotImplementedError("the initial schema cannot be downgraded: the audit log is kept")
