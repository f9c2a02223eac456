"""Sealing the records of a vault made before record seals (``vault upgrade``, once).

Revision 0010 adds ``records.seal`` and sets ``vault_meta.record_seals`` to
``pending``; :func:`seal_pending` then seals every record that has none, under
its subject's data key, in batches (resumable: a crash leaves the flag pending
and the next upgrade goes on), and sets the flag to ``done``. A record whose
subject's key is gone (crypto-shredded) stays unsealed: it cannot be read
anyway. Once the flag is ``done`` nothing ever seals a row that lacks a seal,
so removing a tampered row's seal cannot get it re-made.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import bindparam, select, update

from vault._kernel.kernel import Kernel
from vault.crypto.envelope import RecordContext
from vault.store.tables import META, RECORDS

__all__ = ["DONE", "PENDING", "SEALS_KEY", "seal_pending"]

SEALS_KEY = "record_seals"
PENDING = "pending"
DONE = "done"
_BATCH = 1000

_UNSEALED = (
    select(RECORDS.c.id, RECORDS.c.tenant, RECORDS.c.collection, RECORDS.c.subject_id,
           RECORDS.c.envelopes, RECORDS.c.version)
    .where(RECORDS.c.seal.is_(None), RECORDS.c.id > bindparam("after"))
    .order_by(RECORDS.c.id).limit(_BATCH)
)
_SET_SEAL = update(RECORDS).where(RECORDS.c.id == bindparam("rid")).values(
    seal=bindparam("seal"))


def seal_pending(kernel: Kernel) -> int | None:
    """Seal the unsealed records if the vault's seals are pending; returns how many
    were sealed (None: nothing was pending)."""
    with kernel.engine.connect() as conn:
        state = conn.execute(select(META.c.value).where(META.c.key == SEALS_KEY)).scalar()
    if state != PENDING:
        return None
    sealed, after = 0, ""
    while True:
        with kernel.engine.begin() as conn:
            rows = conn.execute(_UNSEALED, {"after": after}).all()
            if not rows:
                conn.execute(update(META).where(META.c.key == SEALS_KEY).values(value=DONE))
                return sealed
            after = rows[-1].id
            by_tenant: dict[str, list[Any]] = defaultdict(list)
            for row in rows:
                by_tenant[row.tenant].append(row)
            seals = []
            for tenant, group in by_tenant.items():
                keys = kernel.keystore.get_keys(
                    tenant, sorted({r.subject_id for r in group}), missing_ok=True)
                for r in group:
                    key = keys.get(r.subject_id)
                    if key is None:
                        continue
                    record = RecordContext(tenant, r.collection, r.id, r.subject_id)
                    seals.append({"rid": r.id, "seal": kernel.cipher.seal(
                        key, bytes(r.envelopes), record, int(r.version))})
            if seals:
                conn.execute(_SET_SEAL, seals)
            sealed += len(seals)
