"""Erasure markers: ``erased_subjects``, one row per crypto-shredded subject.

Written in the data database in the transaction of the destruction's audit entry
(``keys.destroy``, ``retention.shred``), so that a key store restored from an
older copy cannot bring an erased subject back: the data path refuses a marked
subject whatever the key store holds. Rows are inserted, never updated or
deleted. Subjects shredded before this revision are marked by ``vault upgrade``
from the key store's tombstones; ``vault keys check-erasures --repair`` (or
``v.keys.check_erasures(repair=True)``) marks any whose key is live again, from
the audit log.
"""

import sqlalchemy as sa
from alembic import op

from vault.store.ddl import subject_key, timestamp

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "erased_subjects",
        *subject_key(),
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        timestamp("erased_at"),
    )


def downgrade() -> None:
    op.drop_table("erased_subjects")
