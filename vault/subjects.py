"""``v.subjects``: a data subject's jurisdiction and restriction, changed only by
audited calls.

A subject's jurisdiction is set when it is created (``put(...,
jurisdiction=...)``) and decides which profile governs it; changing it later
(the customer moved) is :meth:`SubjectService.set_jurisdiction`. Restricting
processing (GDPR Art. 18, PIPL Art. 44) makes every read and write refuse the
subject for any purpose that is not ``restricted_use`` in ``purposes.toml``
(storage, legal claims, fulfilling the subject's requests) until lifted.

Each change is written with its audit entry (on the subject's chain) in one
transaction. When ``actor`` is given, the policy decides: ``consent.manage``
to read a subject, ``subjects.jurisdiction`` to change its regime,
``dsar.process`` for restriction.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import select, update

from vault._kernel import REASON_LIMIT, Kernel, SubjectHooks
from vault.audit.chain import AuditEvent, Decision
from vault.errors import InvalidData, NotFound
from vault.store.tables import SUBJECTS as _SUBJECTS
from vault.types import Actor, actor_id, check_identifier, check_jurisdiction, check_tenant

__all__ = ["SubjectInfo", "SubjectService"]

_REASON = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")


@dataclass(frozen=True, slots=True)
class SubjectInfo:
    subject_id: str
    tenant: str
    jurisdiction: str | None
    regime: str
    restricted_at: dt.datetime | None
    restriction_reason: str | None

    @property
    def restricted(self) -> bool:
        return self.restricted_at is not None


class SubjectService:
    """Jurisdiction and restriction of data subjects; ``hooks`` hear of a changed
    jurisdiction inside its transaction."""

    def __init__(self, kernel: Kernel, *, hooks: SubjectHooks) -> None:
        self._k = kernel
        self._hooks = hooks

    def get(self, subject_id: str, *, tenant: str, actor: Actor | None = None) -> SubjectInfo:
        """A subject's jurisdiction, regime and restriction (ids only).

        Raises:
            NotFound: no such subject.
        """
        tenant = check_tenant(tenant)
        check_identifier(subject_id, "subject_id")
        self._k.authorise(actor, "consent", "consent.manage", tenant=tenant)
        with self._k.read_only() as conn:
            row = conn.execute(select(_SUBJECTS).where(
                _SUBJECTS.c.tenant == tenant, _SUBJECTS.c.subject_id == subject_id)
            ).one_or_none()
        if row is None:
            raise NotFound(f"no data subject {subject_id} in tenant {tenant}")
        return SubjectInfo(subject_id, tenant, row.jurisdiction,
                           self._k.rules.jurisdictions.regime_for(row.jurisdiction),
                           row.restricted_at, row.restriction_reason)

    def set_jurisdiction(self, subject_id: str, jurisdiction: str | None, *, tenant: str,
                         actor: Actor | None = None) -> SubjectInfo:
        """Change the subject's jurisdiction (e.g. the customer moved); audited with
        the old and new regime. Consents already given keep the regime they were
        given under in the ledger (no event is added); decisions use the new profile
        from now on.

        A change of regime can take away opt-in, separate consent and
        localisation, so it needs its own privilege: ``subjects.jurisdiction`` on
        ``subjects`` (the DPO's in the default policy), not ``consent.manage``.

        Raises:
            InvalidData: a malformed code. NotFound: no such subject.
            AccessDenied: ``actor`` may not change a subject's regime (audited).
        """
        if jurisdiction is not None:
            check_jurisdiction(jurisdiction)
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "subjects", "subjects.jurisdiction", tenant=tenant)
        before = self.get(subject_id, tenant=tenant)
        regime = self._k.rules.jurisdictions.regime_for(jurisdiction)
        self._change(before, "subjects.jurisdiction", actor,
                     {"jurisdiction": jurisdiction}, f"{before.regime}>{regime}")
        return self.get(subject_id, tenant=tenant)

    def restrict(self, subject_id: str, *, tenant: str, reason: str = "subject_request",
                 actor: Actor | None = None) -> SubjectInfo:
        """Restrict processing of the subject (GDPR Art. 18(1), PIPL Art. 44).

        Args:
            reason: a code kept with the flag and in the audit entry, e.g.
                ``gdpr_18_1_a`` (accuracy contested) or ``subject_request``.
        """
        if not isinstance(reason, str) or not _REASON.fullmatch(reason):
            raise InvalidData("reason must be a short code", field="reason")
        self._k.authorise(actor, "dsar", "dsar.process", tenant=tenant)
        before = self.get(subject_id, tenant=tenant)
        self._change(before, "subjects.restrict", actor,
                     {"restricted_at": self._k.clock.now(), "restriction_reason": reason},
                     reason)
        return self.get(subject_id, tenant=tenant)

    def lift_restriction(self, subject_id: str, *, tenant: str,
                         actor: Actor | None = None) -> SubjectInfo:
        """Lift a restriction (GDPR Art. 18(3): inform the subject before lifting)."""
        self._k.authorise(actor, "dsar", "dsar.process", tenant=tenant)
        before = self.get(subject_id, tenant=tenant)
        self._change(before, "subjects.lift_restriction", actor,
                     {"restricted_at": None, "restriction_reason": None},
                     before.restriction_reason or "not_restricted")
        return self.get(subject_id, tenant=tenant)

    def _change(self, before: SubjectInfo, action: str, actor: Actor | None,
                values: dict[str, object], reason: str) -> None:
        k = self._k
        with k.engine.begin() as conn:
            conn.execute(update(_SUBJECTS).where(
                _SUBJECTS.c.tenant == before.tenant,
                _SUBJECTS.c.subject_id == before.subject_id).values(**values))
            if "jurisdiction" in values:
                # Another regime may keep the data for another period.
                self._hooks.subject_changed(conn, before.tenant, before.subject_id)
            k.audit_log.append(conn, [AuditEvent(
                tenant=before.tenant, actor=actor_id(actor), action=action,
                decision=Decision.ALLOW, reason=reason[:REASON_LIMIT],
                subjects=(k.pseudonym(before.tenant, before.subject_id),))])
