"""Records whose stored version is not the one the audit log accounts for.

Every change of a record's content raises its ``version`` by one in the
transaction of an audit entry that names it: ``update`` (whose context also
holds the version written) and ``retention.sweep`` (a field pruned, or the record
anonymised or deleted). A record's version is therefore ``1`` plus the number of
allowed entries of those actions that name it (and ``records.reseal``: a
partial erasure moving what is kept under a fresh data key). Its seal
(:mod:`vault.crypto.envelope`) binds the version, so a row rolled back to an
older, self-consistent copy decrypts; this comparison is what finds it
(``record_rolled_back``), and a version the log never recorded
(``record_unaudited_change``). Findings hold record ids, never a value.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import Connection, select

from vault.audit.chain import Damage, Decision, Finding, decode_list
from vault.store.tables import AUDIT_LOG, RECORDS

__all__ = ["CHANGING_ACTIONS", "VersionMismatch", "find_version_mismatches",
           "version_findings"]

CHANGING_ACTIONS = ("update", "retention.sweep", "records.reseal")
"""Audit actions whose allowed entries each account for one new version of every
record they name."""


@dataclass(frozen=True, slots=True)
class VersionMismatch:
    """A record whose stored version differs from the audited one."""

    tenant: str
    collection: str
    record_id: str
    stored: int
    audited: int
    last_seq: int | None  # the newest entry that changed it (None: only its write)
    chain: int | None
    position: int | None


def find_version_mismatches(conn: Connection) -> list[VersionMismatch]:
    """Every stored record whose version is not 1 + its audited changes."""
    changes: Counter[str] = Counter()
    last: dict[str, tuple[int, int, int]] = {}
    rows = conn.execute(
        select(AUDIT_LOG.c.seq, AUDIT_LOG.c.chain, AUDIT_LOG.c.chain_seq, AUDIT_LOG.c.record_ids)
        .where(AUDIT_LOG.c.action.in_(CHANGING_ACTIONS),
               AUDIT_LOG.c.decision == Decision.ALLOW.value)
        .order_by(AUDIT_LOG.c.seq))
    for row in rows:
        for rid in decode_list(row.record_ids):
            changes[rid] += 1
            last[rid] = (int(row.seq), int(row.chain), int(row.chain_seq))
    found: list[VersionMismatch] = []
    for rec in conn.execute(select(RECORDS.c.tenant, RECORDS.c.collection, RECORDS.c.id,
                                   RECORDS.c.version).order_by(RECORDS.c.id)):
        audited = 1 + changes.get(rec.id, 0)
        if rec.version != audited:
            seq, chain, position = last.get(rec.id, (None, None, None))
            found.append(VersionMismatch(rec.tenant, rec.collection, rec.id, int(rec.version),
                                         audited, seq, chain, position))
    return found


def version_findings(found: list[VersionMismatch]) -> list[Finding]:
    """The findings ``verify`` reports for these."""
    out: list[Finding] = []
    for m in found:
        where = f"tenant {m.tenant}: record {m.record_id} of {m.collection}"
        if m.stored < m.audited:
            out.append(Finding(
                Damage.ROLLED_BACK, m.chain, m.position, m.last_seq,
                f"{where} is at version {m.stored} but the audit log records version "
                f"{m.audited}: the row was rolled back to an older copy"))
        else:
            out.append(Finding(
                Damage.UNAUDITED_CHANGE, m.chain, m.position, m.last_seq,
                f"{where} is at version {m.stored} but the audit log accounts only for "
                f"version {m.audited}: it was changed without an audit entry"))
    return out
