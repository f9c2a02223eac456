"""Subjects the audit log says were crypto-shredded whose data key is live again.

Every crypto-shredding leaves an audit entry naming the subjects' pseudonyms
(``keys.destroy`` with decision allow or error, ``retention.shred``) and an
erasure marker in the data database (:mod:`vault.store.erasures`). The key
store is a separate database: restoring an older copy of it brings destroyed
wrapped keys back. :func:`find_resurrections` compares the three: a live key
whose subject the log (or a marker) says was destroyed is a resurrection. The
log is the authority; a marker deleted along with the restore does not hide one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select

from vault.audit.chain import Damage, Decision, Finding, decode_list
from vault.store.erasures import markers
from vault.store.tables import AUDIT_LOG

__all__ = ["ERASING_ACTIONS", "Resurrection", "find_resurrections", "resurrection_findings"]

ERASING_ACTIONS = ("keys.destroy", "retention.shred")
"""Audit actions whose entries (allowed, or in error after the key was destroyed)
record a crypto-shredding of the subjects they name."""

LiveKeys = Callable[[Sequence[str]], Iterable[tuple[str, str]]]
"""(tenants) -> (tenant, subject id) of every live data key of those tenants."""


@dataclass(frozen=True, slots=True)
class Resurrection:
    """A subject erased by crypto-shredding whose data key is live again.

    Attributes:
        tenant, subject_id, pseudonym: the subject.
        action: the audit action that destroyed it (``keys.destroy``,
            ``retention.shred``; ``None`` if only its marker says so).
        audit_seq, chain, position: where that entry is in the log (``None``
            without one: the entry is missing, yet the marker is there).
        marked: whether the data database's erasure marker is present (if not,
            the data path would serve the subject again: repair it).
    """

    tenant: str
    subject_id: str
    pseudonym: str
    action: str | None
    audit_seq: int | None
    chain: int | None
    position: int | None
    marked: bool


def _erased_in_log(conn: Connection) -> dict[tuple[str, str], tuple[str, int, int, int]]:
    """(tenant, pseudonym) -> (action, seq, chain, position) of the first entry that
    shredded it."""
    found: dict[tuple[str, str], tuple[str, int, int, int]] = {}
    rows = conn.execute(
        select(AUDIT_LOG.c.seq, AUDIT_LOG.c.chain, AUDIT_LOG.c.chain_seq, AUDIT_LOG.c.tenant,
               AUDIT_LOG.c.action, AUDIT_LOG.c.subjects)
        .where(AUDIT_LOG.c.action.in_(ERASING_ACTIONS),
               AUDIT_LOG.c.decision.in_((Decision.ALLOW.value, Decision.ERROR.value)))
        .order_by(AUDIT_LOG.c.seq))
    for row in rows:
        for pseudonym in decode_list(row.subjects):
            found.setdefault((str(row.tenant), pseudonym),
                             (str(row.action), int(row.seq), int(row.chain), int(row.chain_seq)))
    return found


def find_resurrections(conn: Connection, live_keys: LiveKeys,
                       pseudonym: Callable[[str, str], str]) -> list[Resurrection]:
    """Every subject the log or a marker says was shredded whose key is live.

    Args:
        conn: a connection to the data database (log and markers are read).
        live_keys: the key store's live keys of the given tenants.
        pseudonym: the vault's keyed pseudonym of (tenant, subject id).
    """
    in_log = _erased_in_log(conn)
    marked = {(tenant, sid): p for tenant, sid, p in markers(conn)}
    tenants = sorted({t for t, _ in in_log} | {t for t, _ in marked})
    if not tenants:
        return []
    found: list[Resurrection] = []
    for tenant, sid in live_keys(tenants):
        is_marked = (tenant, sid) in marked
        p = marked.get((tenant, sid)) or pseudonym(tenant, sid)
        entry = in_log.get((tenant, p))
        if entry is None and not is_marked:
            continue
        action, seq, chain, position = entry if entry is not None else (None, None, None, None)
        found.append(Resurrection(tenant, sid, p, action, seq, chain, position, is_marked))
    found.sort(key=lambda r: (r.audit_seq if r.audit_seq is not None else 1 << 62,
                              r.tenant, r.subject_id))
    return found


def resurrection_findings(found: Sequence[Resurrection]) -> list[Finding]:
    """The findings ``verify`` reports for these (pseudonyms only, never an id)."""
    return [Finding(
        Damage.RESURRECTED_KEY, r.chain, r.position, r.audit_seq,
        f"tenant {r.tenant}: subject {r.pseudonym[:16]} was crypto-shredded "
        f"({r.action or 'erasure marker'}) but the key store holds its data key again "
        "(restored from an older copy?); the data path refuses it"
        + ("" if r.marked else " only once marked")
        + "; run v.keys.check_erasures(repair=True) to destroy the key again")
        for r in found]
