"""Legal holds: data under a hold is never deleted, shredded or swept.

A hold covers one subject (``subject_id``) or a whole tenant (no subject),
from when it is placed until it is lifted or its optional ``until`` passes.
While one applies, :meth:`Vault.delete`, :meth:`KeyService.destroy` (and so
erasure requests) raise :class:`~vault.errors.LegalHoldActive`, and the
retention sweeper skips the data and counts it as held. Placing and lifting
are audited; holds are lifted, never deleted (a trigger refuses DELETE).

On PostgreSQL, placing a hold and every deleting transaction take an
advisory lock per tenant (exclusive for the hold, shared for deleters), so a
deletion that started before a hold commits finishes first and every later
one sees the hold. SQLite serialises writers anyway.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, or_, select, update

from vault._kernel import ADMIN_PURPOSE, REASON_LIMIT, Kernel
from vault.audit.chain import AuditEvent, Decision
from vault.errors import InvalidData, NotFound
from vault.retention.holdrules import active_hold_clause, holds_applying, lock_tenants
from vault.store.tables import LEGAL_HOLDS as _HOLDS
from vault.store.tables import SUBJECTS as _SUBJECTS
from vault.types import Actor, actor_id, check_identifier, check_tenant

__all__ = ["HoldService", "LegalHold"]

# A case or matter reference: letters, digits, spaces and a little punctuation.
# No "@" or "+" (an e-mail address or an international phone number), and no
# long run of digits (a phone number or an id): the reason is stored in clear.
_REASON = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _./:#()-]{0,199}")
_LONG_NUMBER = re.compile(r"\d(?:[ ./-]?\d){7,}")


@dataclass(frozen=True, slots=True)
class LegalHold:
    """A legal hold. ``subject_id`` None means the whole tenant."""

    id: str
    tenant: str
    subject_id: str | None
    reason: str
    placed_by: str
    placed_at: dt.datetime
    until: dt.datetime | None
    lifted_at: dt.datetime | None
    lifted_by: str | None

    def active(self, now: dt.datetime) -> bool:
        return self.lifted_at is None and (self.until is None or self.until > now)

    @property
    def scope(self) -> str:
        return "tenant" if self.subject_id is None else "subject"


class HoldService:
    """Place, lift and list legal holds (``v.holds``).

    Authorised by the ``holds.manage`` action on the ``holds`` object (the
    default policy gives it to ``dpo`` and ``compliance_officer``); without an
    ``actor`` the caller is the local operator (``system``).
    """

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel

    def place(self, tenant: str, subject_id: str | None = None, *, reason: str,
              until: dt.datetime | None = None, actor: Actor | None = None) -> LegalHold:
        """Place a hold on a subject or, with ``subject_id`` None, on a whole tenant.

        Args:
            reason: a case or matter reference (e.g. ``LIT-2026-014``), at most 200
                letters, digits, spaces and ``_./:#()-``. Misuse: never put personal
                data here; it is stored in clear and shown to whoever lists holds
                (an e-mail address or a phone number is refused).
            until: when the hold ends by itself (aware datetime), or None.

        Raises:
            InvalidData: a bad tenant, subject id, reason or ``until``.
            AccessDenied: ``actor`` may not manage holds (audited).
            NotFound: no such subject in the tenant (nothing is held).
        """
        check_tenant(tenant)
        if subject_id is not None:
            check_identifier(subject_id, "subject_id")
        if (not isinstance(reason, str) or not _REASON.fullmatch(reason.strip())
                or _LONG_NUMBER.search(reason)):
            raise InvalidData("reason must be a case reference of 1-200 letters, digits, "
                              "spaces and _./:#()- (no e-mail address or phone number)",
                              field="reason")
        now = self._k.clock.now()
        if until is not None and (not isinstance(until, dt.datetime) or until.tzinfo is None
                                  or until <= now):
            raise InvalidData("until must be an aware datetime in the future", field="until")
        self._k.authorise(actor, "holds", "holds.manage", tenant=tenant)
        if subject_id is not None:
            with self._k.read_only() as conn:
                known = conn.execute(select(_SUBJECTS.c.subject_id).where(
                    _SUBJECTS.c.tenant == tenant, _SUBJECTS.c.subject_id == subject_id)).first()
            if known is None:
                # A typo would otherwise leave the real subject unprotected, silently.
                raise NotFound(f"no data subject {subject_id} in tenant {tenant}; "
                               "nothing was held")
        hold = LegalHold(id=uuid.uuid4().hex, tenant=tenant, subject_id=subject_id,
                         reason=reason.strip(), placed_by=actor_id(actor),
                         placed_at=now, until=until, lifted_at=None, lifted_by=None)
        subjects = (self._k.pseudonym(tenant, subject_id),) if subject_id else ()
        with self._k.engine.begin() as conn:
            lock_tenants(conn, [tenant], exclusive=True)
            conn.execute(insert(_HOLDS), [{
                "id": hold.id, "tenant": tenant, "subject_id": subject_id,
                "reason": hold.reason, "placed_by": hold.placed_by, "placed_at": now,
                "until": until, "lifted_at": None, "lifted_by": None}])
            self._k.audit_log.append(conn, [self._event(
                "holds.place", tenant, actor, subjects,
                f"hold:{hold.id}:{hold.scope}")])
        return hold

    def lift(self, hold_id: str, *, actor: Actor | None = None) -> LegalHold:
        """Lift a hold; the data becomes subject to retention and erasure again.

        Raises:
            NotFound: no such hold, or it was already lifted.
            AccessDenied: ``actor`` may not manage holds in the hold's tenant (audited).
        """
        check_identifier(hold_id, "hold_id")
        hold = self.get(hold_id)
        if hold.lifted_at is not None:
            raise NotFound(f"hold {hold_id} was already lifted")
        self._k.authorise(actor, "holds", "holds.manage", tenant=hold.tenant)
        now = self._k.clock.now()
        by = actor_id(actor)
        subjects = ((self._k.pseudonym(hold.tenant, hold.subject_id),)
                    if hold.subject_id else ())
        with self._k.engine.begin() as conn:
            changed = conn.execute(
                update(_HOLDS).where(_HOLDS.c.id == hold_id, _HOLDS.c.lifted_at.is_(None))
                .values(lifted_at=now, lifted_by=by)).rowcount
            if not changed:
                raise NotFound(f"hold {hold_id} was already lifted")
            self._k.audit_log.append(conn, [self._event(
                "holds.lift", hold.tenant, actor, subjects, f"hold:{hold_id}:{hold.scope}")])
        return LegalHold(**{**_as_dict(hold), "lifted_at": now, "lifted_by": by})

    def get(self, hold_id: str) -> LegalHold:
        """One hold by id.

        Raises:
            NotFound: no such hold.
        """
        with self._k.read_only() as conn:
            row = conn.execute(select(_HOLDS).where(_HOLDS.c.id == hold_id)).first()
        if row is None:
            raise NotFound(f"no legal hold {hold_id}")
        return _hold(row)

    def list(self, *, tenant: str | None = None, subject_id: str | None = None,
             active_only: bool = True) -> list[LegalHold]:
        """Holds, newest first; by default only those that apply now.

        ``subject_id`` also lists the tenant-wide holds that cover the subject.
        """
        query = select(_HOLDS).order_by(_HOLDS.c.placed_at.desc(), _HOLDS.c.id)
        if tenant is not None:
            check_tenant(tenant)
            query = query.where(_HOLDS.c.tenant == tenant)
        if subject_id is not None:
            query = query.where(or_(_HOLDS.c.subject_id == subject_id,
                                    _HOLDS.c.subject_id.is_(None)))
        if active_only:
            query = query.where(active_hold_clause(self._k.clock.now()))
        with self._k.read_only() as conn:
            rows = conn.execute(query).all()
        return [_hold(r) for r in rows]

    def is_held(self, tenant: str, subject_id: str | None = None) -> bool:
        """Whether a hold applies now to the subject (or, without one, to the tenant)."""
        check_tenant(tenant)
        if subject_id is not None:
            check_identifier(subject_id, "subject_id")
        now = self._k.clock.now()
        with self._k.read_only() as conn:
            held = holds_applying(conn, tenant, [subject_id] if subject_id else [], now)
        return bool(held)

    def _event(self, action: str, tenant: str, actor: Actor | None,
               subjects: tuple[str, ...], reason: str) -> AuditEvent:
        return AuditEvent(tenant=tenant, actor=actor_id(actor),
                          action=action, decision=Decision.ALLOW, subjects=subjects,
                          reason=reason[:REASON_LIMIT],
                          purpose=ADMIN_PURPOSE if actor else None)


def _as_dict(hold: LegalHold) -> dict[str, Any]:
    return {name: getattr(hold, name) for name in LegalHold.__slots__}


def _hold(row: Any) -> LegalHold:
    return LegalHold(id=row.id, tenant=row.tenant, subject_id=row.subject_id, reason=row.reason,
                     placed_by=row.placed_by, placed_at=row.placed_at, until=row.until,
                     lifted_at=row.lifted_at, lifted_by=row.lifted_by)
