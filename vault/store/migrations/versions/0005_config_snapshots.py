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
"""

import sqlalchemy as sa
from alembic import op

from vault.store.ddl import append_only, bigints, serial, texts, timestamp

revision = "0005"
down_revision = "0004"

APPEND_ONLY_MESSAGE = "vault config snapshots are append-only"


def upgrade() -> None:
    op.create_table(
        "config_snapshots",
        serial(),
        timestamp("recorded_at"),
        sa.Column("digest", sa.String(64), nullable=False),
        *texts("items"),
        *bigints("audit_position"),
    )
    append_only("config_snapshots", "vault_config_append_only", APPEND_ONLY_MESSAGE)


def downgrade() -> None:
    op.drop_table("config_snapshots")  # its triggers go with it
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS vault_config_append_only()")
