"""The rules of legal holds that every deleting path applies, in its own transaction.

A hold covers one subject or (no subject) a whole tenant while it is active.
Deleting paths (``delete``, crypto-shredding, the retention sweeper) check
:func:`ensure_not_held` or filter with :func:`active_hold_clause` inside the
transaction that deletes; on PostgreSQL they hold the tenant's shared hold
lock (:func:`lock_tenants`) meanwhile, and placing a hold takes it exclusively,
so a deletion that started before a hold commits finishes first and every
later one sees the hold. SQLite serialises writers anyway. The holds
themselves are placed and lifted by :class:`vault.retention.holds.HoldService`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, and_, or_, select, text

from vault.errors import LegalHoldActive
from vault.store.tables import LEGAL_HOLDS as _HOLDS

__all__ = ["active_hold_clause", "ensure_not_held", "holds_applying", "lock_tenants"]


def active_hold_clause(now: dt.datetime) -> Any:
    """SQL condition: a hold row that applies at ``now``."""
    return and_(_HOLDS.c.lifted_at.is_(None),
                or_(_HOLDS.c.until.is_(None), _HOLDS.c.until > now))


def lock_tenants(conn: Connection, tenants: Iterable[str], *, exclusive: bool = False) -> None:
    """Take the per-tenant hold lock on PostgreSQL (no-op on SQLite), in a stable order."""
    if conn.dialect.name != "postgresql":
        return
    fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    for tenant in sorted(set(tenants)):
        conn.execute(text(f"SELECT {fn}(hashtext(:k))"), {"k": f"vault-hold:{tenant}"})


def holds_applying(conn: Connection, tenant: str, subject_ids: Sequence[str],
                   now: dt.datetime) -> dict[str | None, list[str]]:
    """Active holds of the tenant (key None) and of these subjects, by subject."""
    found: dict[str | None, list[str]] = {}
    rows = conn.execute(
        select(_HOLDS.c.id, _HOLDS.c.subject_id).where(
            _HOLDS.c.tenant == tenant, active_hold_clause(now),
            or_(_HOLDS.c.subject_id.is_(None), _HOLDS.c.subject_id.in_(list(subject_ids)))))
    for row in rows:
        found.setdefault(row.subject_id, []).append(row.id)
    return found


def ensure_not_held(conn: Connection, tenant: str, subject_id: str, now: dt.datetime) -> None:
    """Raise LegalHoldActive if a hold applies to the subject (call inside the deleting
    transaction; takes the tenant's shared hold lock on PostgreSQL).

    Raises:
        LegalHoldActive: naming the hold ids.
    """
    lock_tenants(conn, [tenant])
    held = holds_applying(conn, tenant, [subject_id], now)
    ids = tuple(sorted(h for hs in held.values() for h in hs))
    if ids:
        raise LegalHoldActive(f"a legal hold applies ({', '.join(ids)}); nothing was deleted",
                              hold_ids=ids)
