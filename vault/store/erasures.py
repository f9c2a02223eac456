"""Erasure markers in the data database (``erased_subjects``).

The key store's tombstone says a subject is erased, but the key store is a
separate database whose older copy can be restored, bringing the wrapped key
back. The marker is written in the data database in the same transaction as
the destruction's audit entry, so it survives such a restore: the data path
refuses a marked subject whatever the key store holds, and
``v.keys.check_erasures`` compares the audit log, the markers and the key store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from vault.store.tables import ERASED_SUBJECTS

__all__ = ["backfill_markers", "erased_among", "mark_erased", "markers"]

_CHUNK = 500


def mark_erased(conn: Connection, tenant: str, pseudonyms: Mapping[str, str], *,
                action: str, now: dt.datetime) -> None:
    """Mark these subjects (subject id -> pseudonym) erased, inside the caller's
    transaction (the one of the destruction's audit entry). Idempotent: a subject
    already marked keeps its first marker."""
    rows = [{"tenant": tenant, "subject_id": sid, "pseudonym": p, "action": action,
             "erased_at": now} for sid, p in pseudonyms.items()]
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        module = sqlite if dialect == "sqlite" else postgresql
        stmt = module.insert(ERASED_SUBJECTS).on_conflict_do_nothing()
        for start in range(0, len(rows), _CHUNK):
            conn.execute(stmt, rows[start:start + _CHUNK])
        return
    present = erased_among(conn, tenant, list(pseudonyms))  # pragma: no cover - other engines
    missing = [r for r in rows if r["subject_id"] not in present]  # pragma: no cover
    if missing:  # pragma: no cover
        conn.execute(ERASED_SUBJECTS.insert(), missing)


def erased_among(conn: Connection, tenant: str, subject_ids: Sequence[str]) -> set[str]:
    """Which of these subjects carry an erasure marker."""
    found: set[str] = set()
    for start in range(0, len(subject_ids), _CHUNK):
        found.update(conn.execute(select(ERASED_SUBJECTS.c.subject_id).where(
            ERASED_SUBJECTS.c.tenant == tenant,
            ERASED_SUBJECTS.c.subject_id.in_(list(subject_ids[start:start + _CHUNK])),
        )).scalars())
    return found


def markers(conn: Connection) -> Iterable[tuple[str, str, str]]:
    """Every marker, as (tenant, subject id, pseudonym)."""
    for row in conn.execute(select(ERASED_SUBJECTS.c.tenant, ERASED_SUBJECTS.c.subject_id,
                                   ERASED_SUBJECTS.c.pseudonym)):
        yield row.tenant, row.subject_id, row.pseudonym


def backfill_markers(engine: Engine, tombstones: Iterable[tuple[str, str]],
                     pseudonym: Callable[[str, str], str], now: dt.datetime) -> int:
    """Mark every subject that has a tombstone in the key store but no marker yet
    (shredded before markers existed); returns how many were marked."""
    pending: dict[str, list[str]] = {}
    marked = 0

    def flush() -> int:
        done = 0
        with engine.begin() as conn:
            for tenant, sids in pending.items():
                present = erased_among(conn, tenant, sids)
                missing = [s for s in sids if s not in present]
                mark_erased(conn, tenant, {s: pseudonym(tenant, s) for s in missing},
                            action="vault.upgrade", now=now)
                done += len(missing)
        pending.clear()
        return done

    for count, (tenant, sid) in enumerate(tombstones, start=1):
        pending.setdefault(tenant, []).append(sid)
        if count % _CHUNK == 0:
            marked += flush()
    return marked + (flush() if pending else 0)
