"""The data path's consent gate: consent, restriction and cross-border checks for
every subject a call touches, in the call's own transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from vault._kernel import REASON_LIMIT, Kernel
from vault.audit.chain import AuditEvent, Decision
from vault.consent.decision import Refusal, SubjectFacts, Use, Verdict
from vault.consent.gate import ConsentGate
from vault.errors import ConsentRequired, SubjectRestricted, TransferRefused, VaultError
from vault.schema import CollectionSchema
from vault.types import Actor

__all__ = ["CONSENT_REFUSALS", "DataGate", "consent_error"]

#: The errors the gate raises for a refused subject.
CONSENT_REFUSALS = (ConsentRequired, SubjectRestricted, TransferRefused)


def consent_error(purpose: str, refused: Mapping[str, Verdict]) -> VaultError:
    """One error for a refused batch: the most fundamental refusal wins."""
    order = list(Refusal)
    verdict = min(refused.values(),
                  key=lambda v: order.index(v.refusal) if v.refusal else len(order))
    refusal = verdict.refusal or Refusal.CONSENT_REQUIRED
    scope = verdict.scope.value if verdict.scope else None
    reason = f"{refusal.value}:{scope}" if scope else refusal.value
    count = len(refused)
    message = (f"{purpose} refused for {count} subject(s) under {verdict.regime}: "
               f"{refusal.value}" + (f" ({scope} consent)" if scope else ""))
    if refusal is Refusal.RESTRICTED:
        return SubjectRestricted(message, reason=reason, purpose=purpose, subjects=count)
    if refusal in (Refusal.TRANSFER_REFUSED, Refusal.LOCALISATION):
        return TransferRefused(message, reason=reason, purpose=purpose, subjects=count)
    return ConsentRequired(message, reason=reason, purpose=purpose, scope=scope,
                           subjects=count)


def _restricted_of(loaded: Mapping[str, Any],
                   subject_ids: Sequence[str]) -> dict[str, SubjectFacts]:
    """The restricted subjects among the loaded rows' (what
    ``subject_facts(..., restricted_only=True)`` would read)."""
    wanted = set(subject_ids)
    facts: dict[str, SubjectFacts] = {}
    for row in loaded.values():
        if row.restricted_at is not None and row.subject_id in wanted:
            facts[row.subject_id] = SubjectFacts(row.subject_id, row.jurisdiction, True, {})
    missing = wanted.difference(row.subject_id for row in loaded.values())
    if missing:  # fail closed: every subject judged must have come with its rows
        raise AssertionError("the consent gate was given rows missing some subjects")
    return facts


class DataGate:
    """Asks the consent layer, once per call, about every subject it touches."""

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel
        self._consent = ConsentGate(kernel.rules.jurisdictions, kernel.rules.notices)

    def check(
        self, conn: Connection | None, actor: Actor, schema: CollectionSchema, purpose: str,
        subject_ids: Sequence[str], fields: Sequence[str], *,
        new_subjects: Mapping[str, str | None] | None = None,
        loaded: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Verdict], list[AuditEvent]]:
        """Consent, restriction and cross-border checks for every subject a call touches.

        One batched lookup of the subjects' jurisdictions, restriction flags and
        consent states for ``purpose`` (per 500 subjects), then the pure
        per-subject decision of :func:`vault.consent.decide` for the ``fields``
        used. Subjects in ``new_subjects`` (being created by this write, with their
        jurisdiction) have no consent yet. ``loaded``: the record rows read in
        ``conn`` (with their subjects' ``restricted_at`` and ``jurisdiction``) of
        every subject in ``subject_ids``, so that a use decided by restriction
        alone reads nothing more.

        Returns:
            The refused subjects with their verdicts, and audit events naming the
            transfer mechanism relied on for allowed cross-border access (to be
            appended in the caller's transaction).
        """
        k = self._k
        specs = [schema.fields[f] for f in fields]
        use = Use(purpose=k.rules.purposes.get(purpose),
                  categories=frozenset(spec.category for spec in specs),
                  fields=tuple((spec.name, spec.classification.value, spec.category)
                               for spec in specs),
                  region=actor.region, recipient=actor.recipient)
        new = new_subjects or {}
        existing = [s for s in dict.fromkeys(subject_ids) if s not in new]
        uniform = self._consent.depends_only_on_restriction(use)
        facts: dict[str, SubjectFacts] = {}
        if existing:
            if uniform and loaded is not None:
                facts = _restricted_of(loaded, existing)
            elif conn is None:  # fail closed: stored subjects are never judged unread
                raise AssertionError("the consent gate needs a connection for stored subjects")
            else:
                facts = self._consent.subject_facts(conn, actor.tenant, existing, purpose,
                                                    restricted_only=uniform)
        for sid in existing:
            # Not found: unrestricted when only restriction matters, else the default regime.
            facts.setdefault(sid, SubjectFacts(sid, None, False, {}))
        # New subjects have no consent state and no restriction: decide_many gives
        # them one shared verdict per jurisdiction, so one of each is enough.
        firsts: dict[str | None, str] = {}
        for sid, code in new.items():
            if firsts.setdefault(code, sid) == sid:
                facts[sid] = SubjectFacts(sid, code, False, {})
        decided = self._consent.decide_many(facts, use, now=k.clock.now())
        # In the order of one fact per subject: the stored subjects, then the new ones.
        verdicts = {sid: v for sid, v in decided.items() if sid not in new}
        for sid, code in new.items():
            verdicts[sid] = decided[firsts[code]]
        refused = {sid: v for sid, v in verdicts.items() if not v.allowed}
        transfers = [
            AuditEvent(tenant=actor.tenant, actor=actor.id, action="transfer",
                       decision=Decision.ALLOW, collection=schema.name,
                       subjects=(k.pseudonym(actor.tenant, sid),), fields=tuple(fields),
                       purpose=purpose,
                       reason=f"{v.mechanism}:to:{actor.region}"[:REASON_LIMIT])
            for sid, v in verdicts.items() if v.allowed and v.mechanism is not None
        ]
        return refused, k.group_by_chain(transfers)

    def withheld_events(
        self, actor: Actor, schema: CollectionSchema, purpose: str, action: str,
        rows: Mapping[str, Any], refused: Mapping[str, Verdict],
    ) -> list[AuditEvent]:
        """Denial entries for search hits withheld because their subject was refused."""
        k = self._k
        events = [
            AuditEvent(tenant=actor.tenant, actor=actor.id, action=action,
                       decision=Decision.DENY, collection=schema.name, record_ids=(rid,),
                       subjects=(k.pseudonym(actor.tenant, row.subject_id),),
                       purpose=purpose,
                       reason=(refused[row.subject_id].refusal or Refusal.CONSENT_REQUIRED).value)
            for rid, row in rows.items() if row.subject_id in refused
        ]
        return k.group_by_chain(events)
