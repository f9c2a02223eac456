"""Record seals: ``records.seal``, an AES-GCM tag over a record's identity, version
and framed envelopes (see :mod:`vault.crypto.envelope`).

Records written before this revision have none; the data path refuses an
unsealed record, so ``vault upgrade`` seals them once, under their subjects' data
keys, while ``vault_meta.record_seals`` is ``pending``, and then sets it to
``done``. After that a seal is never made for a row that lacks one: a row whose
seal was removed stays refused instead of being laundered.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("seal", sa.LargeBinary()))
    op.execute("INSERT INTO vault_meta (key, value) VALUES ('record_seals', 'pending')")


def downgrade() -> None:
    op.execute("DELETE FROM vault_meta WHERE key = 'record_seals'")
    with op.batch_alter_table("records") as batch:
        batch.drop_column("seal")
