"""Audit entry format 2: every column bound into the hash, plus a context.

``audit_log.format`` says which rules an entry's hash follows (see
:mod:`vault.audit.chain`): every entry already written is format 1 (the
server default), every entry written from now on is format 2, which binds
``seq``, the canonical ``ts`` and the new ``context`` column (canonical JSON,
``{}`` for format 1) as well. Both columns carry CHECK constraints (format 1
or 2; on SQLite, context must be text), so a careless UPDATE is refused even
with the append-only triggers gone; ``verify`` checks the same regardless.

Downgrading keeps both columns: the audit log is evidence, and a format-2
entry stripped of its format would no longer verify. An older release writing
after a downgrade fills them with their defaults (format 1, ``{}``). Running
this upgrade again on such a database only checks that they are there.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    bind = op.get_bind()
    present = {c["name"] for c in sa.inspect(bind).get_columns("audit_log")}
    if bind.dialect.name == "sqlite":
        # ADD COLUMN (no table rebuild: the triggers and the rows stay as they are).
        if "format" not in present:
            op.execute("ALTER TABLE audit_log ADD COLUMN format SMALLINT NOT NULL DEFAULT 1 "
                       "CONSTRAINT ck_audit_log_format CHECK (format IN (1, 2))")
        if "context" not in present:
            op.execute("ALTER TABLE audit_log ADD COLUMN context TEXT NOT NULL DEFAULT '{}' "
                       "CONSTRAINT ck_audit_log_context CHECK (typeof(context) = 'text')")
        return
    if "format" not in present:
        op.execute("ALTER TABLE audit_log ADD COLUMN format SMALLINT NOT NULL DEFAULT 1 "
                   "CONSTRAINT ck_audit_log_format CHECK (format IN (1, 2))")
    if "context" not in present:
        op.execute("ALTER TABLE audit_log ADD COLUMN context TEXT NOT NULL DEFAULT '{}'")


def downgrade() -> None:
    """Nothing to undo: see the module docstring."""
