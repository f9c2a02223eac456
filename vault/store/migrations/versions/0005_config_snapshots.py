"""Configuration snapshots: what each opening process was configured with, append-only.

``config_snapshots`` holds one row per configuration a process opened the vault
with that differed from the previous one (see :mod:`vault.audit.config`): the
combined digest and the item name -> SHA-256 map as JSON, never a value, and
the position in the administrative audit chain of the ``config.*`` entry that
records it (a row no entry vouches for is ignored). The database refuses
UPDATE, DELETE and TRUNCATE on it, as on the audit log (0001).

Downgrading drops the table: the evidence of each change is the
``config.baseline`` / ``config.change`` entry in the audit log, which stays; the
next open after a re-upgrade writes a new ``config.baseline``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vault.store.base import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

APPEND_ONLY_MESSAGE = "vault config snapshots are append-only"


def upgrade() -> None:
    op.create_table(
        "config_snapshots",
        sa.Column("id", BIGINT, primary_key=True, autoincrement=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("audit_position", BIGINT, nullable=False),
    )
    _append_only_triggers()


def _append_only_triggers() -> None:
    """The same pattern as the audit log's (0001): the database refuses rewrites."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER config_snapshots_no_{verb.lower()} BEFORE {verb} "
                f"ON config_snapshots BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION vault_config_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}' USING ERRCODE = 'insufficient_privilege'; "
            "END $$"
        )
        op.execute(
            "CREATE TRIGGER config_snapshots_no_update_delete BEFORE UPDATE OR DELETE "
            "ON config_snapshots FOR EACH ROW EXECUTE FUNCTION vault_config_append_only()"
        )
        op.execute(
            "CREATE TRIGGER config_snapshots_no_truncate BEFORE TRUNCATE ON config_snapshots "
            "FOR EACH STATEMENT EXECUTE FUNCTION vault_config_append_only()"
        )
        # ENABLE ALWAYS: the triggers fire even with session_replication_role = replica.
        op.execute("ALTER TABLE config_snapshots "
                   "ENABLE ALWAYS TRIGGER config_snapshots_no_update_delete")
        op.execute("ALTER TABLE config_snapshots "
                   "ENABLE ALWAYS TRIGGER config_snapshots_no_truncate")


def downgrade() -> None:
    op.drop_table("config_snapshots")  # its triggers go with it
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS vault_config_append_only()")
