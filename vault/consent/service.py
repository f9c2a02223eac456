"""``v.consent``: the consent ledger, receipts, GPC and the batched consent lookup.

Every event (grant, withdraw, refuse, expire) is appended to the
``consent_events`` ledger, its signed receipt stored with it, the derived
state of its (subject, purpose, scope) updated and the audit entry appended,
all in one transaction; the subject's row is locked meanwhile, so two events
of one subject never interleave. Withdrawal takes one call, like granting
(GDPR Art. 7(3)); under regimes that ask for it (PIPL Art. 47) a withdrawal
also calls the withdrawal hook (retention's, wired by the facade), which
queues deletion of the data held only on that consent.

When ``actor`` is given, the policy decides whether it may manage consent
(``consent.manage`` on ``consent``); when omitted, the caller is the local
operator, recorded as ``system``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import ColumnElement, Connection, Row, Table, func, insert, select, update

from vault._kernel import REASON_LIMIT, ConsentHooks, Kernel
from vault.audit.chain import AuditEvent, Decision
from vault.audit.checkpoint import key_fingerprint, load_public_key
from vault.consent.gate import event_from, state_from
from vault.consent.model import (
    ConsentEvent,
    ConsentMethod,
    ConsentScope,
    ConsentState,
    ConsentStatus,
    EventKind,
)
from vault.consent.model import apply as apply_event
from vault.consent.notices import Notice
from vault.consent.receipts import build_receipt, sign_receipt, verify_receipt
from vault.errors import InvalidData, NotFound, VaultError
from vault.retention.schedule import Period, add_period
from vault.store.retry import transaction_attempts
from vault.store.tables import CONSENT_EVENTS as _EVENTS
from vault.store.tables import CONSENT_STATE as _STATE
from vault.store.tables import RETENTION_SUBJECTS as _RETENTION_EVENTS
from vault.store.tables import SUBJECTS as _SUBJECTS
from vault.types import Actor, actor_id, check_identifier, check_tenant

__all__ = ["AskAgain", "ConsentService", "ConsentSummary", "GPCResult"]

GPC_CONFLICT = "gpc_overrides_opt_in"


@dataclass(frozen=True, slots=True)
class AskAgain:
    """Whether the business may now ask a subject to consent to a purpose again.

    Attributes:
        allowed: True unless the subject opted out of (withdrew or refused) the
            purpose less than the profile's ``reask_after_months`` ago (CCPA
            §1798.135(c)(4): 12 months after an opt-out of sale or sharing).
        not_before: when asking becomes allowed again (None: no wait applies).
        status: the subject's current status for the purpose (None: no event).

    Advice for the CRM's prompts only: a consent the subject gives on their own
    initiative is always recorded.
    """

    allowed: bool
    not_before: dt.datetime | None
    status: ConsentStatus | None


@dataclass(frozen=True, slots=True)
class GPCResult:
    """What a Global Privacy Control signal changed.

    Attributes:
        events: the opt-out events recorded (one per GPC purpose).
        conflicts: purposes where the signal overrode an earlier opt-in
            (CCPA regs §7025(c)(3): the opt-out applies; the business may ask
            the consumer to confirm the opt-in).
        honoured: False if the subject's profile ignores GPC (nothing recorded).
    """

    events: tuple[ConsentEvent, ...]
    conflicts: tuple[str, ...]
    honoured: bool = True


@dataclass(frozen=True, slots=True)
class ConsentSummary:
    """Counts per purpose and regime (from the derived states) and per event kind.

    Attributes:
        rows: one per (regime, purpose, scope): granted, withdrawn, refused,
            expired, total, opt_out_rate (withdrawn + refused over total).
        events: counts of ledger events per (kind, method).
        gpc_signals: GPC opt-out events; gpc_conflicts: those that overrode an opt-in.
    """

    tenant: str | None
    generated_at: dt.datetime
    rows: tuple[dict[str, Any], ...]
    events: tuple[dict[str, Any], ...]
    gpc_signals: int
    gpc_conflicts: int
    columns: tuple[str, ...] = field(default=(
        "regime", "purpose", "scope", "granted", "withdrawn", "refused", "expired", "total",
        "opt_out_rate"))

    def to_json(self) -> str:
        return json.dumps({
            "schema_version": 1, "tenant": self.tenant,
            "generated_at": self.generated_at.isoformat(), "rows": list(self.rows),
            "events": list(self.events), "gpc_signals": self.gpc_signals,
            "gpc_conflicts": self.gpc_conflicts,
        }, indent=2, ensure_ascii=False) + "\n"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.columns), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow(row)
        return buffer.getvalue()


def _tenant(tenant: object) -> str:
    if not isinstance(tenant, str):
        raise InvalidData("tenant must be a string", field="tenant")
    return check_tenant(tenant)


@dataclass(frozen=True, slots=True)
class _Spec:
    purpose: str
    scope: ConsentScope
    kind: EventKind
    method: ConsentMethod
    source: str
    evidence: str | None
    notice: Notice | None = None
    expires_at: dt.datetime | None = None
    gpc: bool = False


class ConsentService:
    """Consent ledger: grant, withdraw, refuse, expire, GPC, state, history, receipts.

    ``hooks`` hear of withdrawals that end a consent, and of grants that give
    every ended one back, under a profile with ``erase_on_withdrawal``.
    """

    def __init__(self, kernel: Kernel, *, hooks: ConsentHooks) -> None:
        self._k = kernel
        self._hooks = hooks

    # ------------------------------------------------------------------ events

    def grant(
        self, subject_id: str, purpose: str, *, tenant: str, notice_id: str,
        notice_version: int, notice_hash: str | None = None,
        scope: ConsentScope | str = ConsentScope.GENERAL,
        method: ConsentMethod | str = ConsentMethod.API, source: str = "api",
        evidence: str | None = None, expires_at: dt.datetime | None = None,
        actor: Actor | None = None,
    ) -> ConsentEvent:
        """Record that the subject consents to ``purpose`` (in ``scope``).

        Args:
            subject_id: an existing data subject of ``tenant``.
            purpose: a registered purpose the notice asks consent for.
            notice_id, notice_version: the notice shown (``policies/notices.toml``).
            notice_hash: SHA-256 hex of the text shown; must equal the
                registered one if given (proves which text the subject saw).
            scope: ``general``, or a separate consent: ``sensitive``,
                ``provide_to_third_party``, ``cross_border``.
            method: web_form, api, import, gpc or agent.
            source: the system the decision came from.
            evidence: a reference to evidence kept elsewhere (an id, not PII).
            expires_at: end of validity (aware datetime in the future), if any.

        Returns:
            The recorded event; ``receipt(event.event_id)`` gives its receipt.

        Raises:
            InvalidData: unknown purpose, notice or scope, a notice that does
                not cover the purpose/scope, a hash mismatch, a bad expiry.
            NotFound: no such subject. AccessDenied: ``actor`` may not manage consent.
        """
        tenant = _tenant(tenant)
        self._k.authorise(actor, "consent", "consent.manage", tenant=tenant)
        try:
            spec = self._spec(purpose, scope, EventKind.GRANT, method, source, evidence)
            notice = self._k.rules.notices.get(notice_id, notice_version)
            if not notice.covers(spec.purpose, spec.scope, ()):
                raise InvalidData("the notice does not ask consent for this purpose and scope",
                                  field="notice")
            if notice_hash is not None and notice_hash.lower() != notice.text_sha256:
                raise InvalidData("notice_hash does not match the registered notice text",
                                  field="notice_hash")
            if expires_at is not None and (not isinstance(expires_at, dt.datetime)
                                           or expires_at.tzinfo is None
                                           or expires_at <= self._k.clock.now()):
                raise InvalidData("expires_at must be an aware time in the future",
                                  field="expires_at")
        except InvalidData as exc:
            self._deny("consent.grant", exc, tenant, actor, subject_id)
        spec = _Spec(spec.purpose, spec.scope, spec.kind, spec.method, spec.source,
                     spec.evidence, notice=notice, expires_at=expires_at)
        return self._record(tenant, subject_id, [spec], actor)[0]

    def withdraw(self, subject_id: str, purpose: str, *, tenant: str,
                 scope: ConsentScope | str = ConsentScope.GENERAL,
                 method: ConsentMethod | str = ConsentMethod.API, source: str = "api",
                 evidence: str | None = None, actor: Actor | None = None) -> ConsentEvent:
        """Record a withdrawal (an opt-out under an opt-out model). One call, no
        notice needed: withdrawing is as easy as granting (GDPR Art. 7(3)).

        Under a regime with ``erase_on_withdrawal`` (PIPL Art. 47) the vault's
        withdrawal hook queues deletion of the data held only on this consent.
        """
        return self._simple(EventKind.WITHDRAW, subject_id, purpose, tenant=tenant,
                            scope=scope, method=method, source=source, evidence=evidence,
                            actor=actor)

    def refuse(self, subject_id: str, purpose: str, *, tenant: str,
               scope: ConsentScope | str = ConsentScope.GENERAL,
               method: ConsentMethod | str = ConsentMethod.API, source: str = "api",
               evidence: str | None = None, actor: Actor | None = None) -> ConsentEvent:
        """Record that the subject was asked and said no."""
        return self._simple(EventKind.REFUSE, subject_id, purpose, tenant=tenant, scope=scope,
                            method=method, source=source, evidence=evidence, actor=actor)

    def expire(self, subject_id: str, purpose: str, *, tenant: str,
               scope: ConsentScope | str = ConsentScope.GENERAL, source: str = "vault",
               actor: Actor | None = None) -> ConsentEvent:
        """Record that a grant lapsed (its validity ended, or a policy ends it)."""
        return self._simple(EventKind.EXPIRE, subject_id, purpose, tenant=tenant, scope=scope,
                            method=ConsentMethod.API, source=source, evidence=None, actor=actor)

    def apply_gpc(self, subject_id: str, *, source: str, tenant: str = "default",
                  actor: Actor | None = None) -> GPCResult:
        """Record a Global Privacy Control signal (``Sec-GPC: 1``) for a known subject.

        Every purpose the subject's profile lists under ``gpc.purposes`` (sale
        and sharing) gets an opt-out event with method ``gpc``. An earlier
        opt-in does not win: the opt-out applies and the event records the
        conflict (CCPA regs §7025(c)(3)). The absence of the signal is never
        read as consent.

        Raises:
            NotFound: no such subject. AccessDenied: ``actor`` may not manage consent.
        """
        tenant = _tenant(tenant)
        self._k.authorise(actor, "consent", "consent.manage", tenant=tenant)
        try:
            check_identifier(subject_id, "subject_id")
            jurisdiction = self._jurisdiction(tenant, subject_id)
        except (InvalidData, NotFound) as exc:
            self._deny("consent.gpc", exc, tenant, actor, subject_id)
        profile = self._k.rules.jurisdictions.profile_for(jurisdiction)
        if not profile.gpc.honour:
            self._k.audit("consent.gpc", actor=actor, tenant=tenant,
                                     subjects=(self._k.pseudonym(tenant, subject_id),),
                                     reason=f"ignored:{profile.name}")
            return GPCResult((), (), honoured=False)
        specs = [_Spec(p, ConsentScope.GENERAL, EventKind.WITHDRAW, ConsentMethod.GPC,
                       _text(source, "source"), None, gpc=True)
                 for p in profile.gpc.purposes]
        events = self._record(tenant, subject_id, specs, actor)
        conflicts = tuple(e.purpose for e in events if e.conflict == GPC_CONFLICT)
        return GPCResult(tuple(events), conflicts)

    # ------------------------------------------------------------------ reads

    def state(self, subject_id: str, *, tenant: str, actor: Actor | None = None
              ) -> list[ConsentState]:
        """The current state of every (purpose, scope) the subject has events for."""
        tenant, subject_id = self._read_access("consent.state", subject_id, tenant, actor)
        return [state_from(r) for r in self._subject_rows(
            _STATE, tenant, subject_id, _STATE.c.purpose, _STATE.c.scope)]

    def ask_again_from(self, state: ConsentState) -> dt.datetime | None:
        """When the business may ask again after the opt-out ``state`` records (a
        general withdrawal or refusal), under the profile of the regime it was made
        in; None when no wait applies."""
        if state.status not in (ConsentStatus.WITHDRAWN, ConsentStatus.REFUSED) or (
                state.scope is not ConsentScope.GENERAL):
            return None
        months = self._k.rules.jurisdictions.profile(state.regime).reask_after_months
        if not months:
            return None
        return add_period(state.updated_at, Period(months=months))

    def may_ask(self, subject_id: str, purpose: str, *, tenant: str,
                actor: Actor | None = None) -> AskAgain:
        """Whether the business may ask the subject to consent to ``purpose`` again
        now (audited as a read of the consent state). See :class:`AskAgain`.

        Raises:
            UnknownPurpose: the purpose is not in the registry.
        """
        self._k.rules.purposes.get(purpose)
        tenant, subject_id = self._read_access("consent.state", subject_id, tenant, actor)
        with self._k.engine.connect() as conn:
            row = conn.execute(select(_STATE).where(
                _STATE.c.tenant == tenant, _STATE.c.subject_id == subject_id,
                _STATE.c.purpose == purpose,
                _STATE.c.scope == ConsentScope.GENERAL.value)).one_or_none()
        if row is None:
            return AskAgain(True, None, None)
        state, now = state_from(row), self._k.clock.now()
        when = self.ask_again_from(state)
        return AskAgain(when is None or when <= now, when, state.status_at(now))

    def history(self, subject_id: str, *, tenant: str, actor: Actor | None = None
                ) -> list[ConsentEvent]:
        """Every ledger event of the subject, oldest first."""
        tenant, subject_id = self._read_access("consent.history", subject_id, tenant, actor)
        return [event_from(r) for r in self._subject_rows(
            _EVENTS, tenant, subject_id, _EVENTS.c.seq)]

    def _subject_rows(self, table: Table, tenant: str, subject_id: str,
                      *order: ColumnElement[Any]) -> Sequence[Row[Any]]:
        with self._k.read_only() as conn:
            return conn.execute(select(table).where(
                table.c.tenant == tenant, table.c.subject_id == subject_id
            ).order_by(*order)).all()

    def receipt(self, event_id: str, *, tenant: str, actor: Actor | None = None
                ) -> dict[str, Any]:
        """The signed receipt of a ledger event, as issued when it was recorded.

        Raises:
            NotFound: no such event in the tenant.
        """
        tenant = _tenant(tenant)
        self._k.authorise(actor, "consent", "consent.manage", tenant=tenant)
        check_identifier(event_id, "event_id")
        with self._k.engine.connect() as conn:
            row = conn.execute(select(
                _EVENTS.c.subject_id, _EVENTS.c.receipt, _EVENTS.c.signature
            ).where(_EVENTS.c.tenant == tenant, _EVENTS.c.event_id == event_id)).one_or_none()
        if row is None:
            raise NotFound(f"no consent event {event_id}")
        self._k.audit("consent.receipt", actor=actor, tenant=tenant,
                                 subjects=(self._k.pseudonym(tenant, row.subject_id),))
        public = self._k.root_keys.signing_key().public_key()
        return {"receipt": json.loads(row.receipt), "alg": "Ed25519",
                "keyId": key_fingerprint(public), "signature": row.signature}

    def verify_receipt(self, receipt: Mapping[str, Any],
                       public_key: bytes | Ed25519PublicKey | None = None) -> Mapping[str, Any]:
        """Check a receipt's signature (with this vault's key, or a published PEM).

        Returns:
            The receipt body.

        Raises:
            InvalidReceipt: altered, forged or signed by another key.
        """
        if public_key is None:
            key = self._k.root_keys.signing_key().public_key()
        elif isinstance(public_key, bytes):
            key = load_public_key(public_key)
        else:
            key = public_key
        return verify_receipt(receipt, key)

    def summary(self, *, tenant: str | None = None, actor: Actor | None = None
                ) -> ConsentSummary:
        """Consent counts per regime, purpose and scope, opt-out rates, event counts."""
        if tenant is not None:
            tenant = _tenant(tenant)
        self._k.authorise(actor, "consent", "consent.manage", tenant=tenant or "*")
        state_q = select(_STATE.c.regime, _STATE.c.purpose, _STATE.c.scope, _STATE.c.status,
                         func.count()).group_by(_STATE.c.regime, _STATE.c.purpose,
                                                _STATE.c.scope, _STATE.c.status)
        event_q = select(_EVENTS.c.kind, _EVENTS.c.method, _EVENTS.c.conflict,
                         func.count()).group_by(_EVENTS.c.kind, _EVENTS.c.method,
                                                _EVENTS.c.conflict)
        if tenant is not None:
            state_q = state_q.where(_STATE.c.tenant == tenant)
            event_q = event_q.where(_EVENTS.c.tenant == tenant)
        with self._k.engine.connect() as conn:
            states = conn.execute(state_q).all()
            events = conn.execute(event_q).all()
        table: dict[tuple[str, str, str], Counter[str]] = {}
        for regime, purpose, scope, status, count in states:
            table.setdefault((regime, purpose, scope), Counter())[status] += int(count)
        rows = []
        for (regime, purpose, scope), counts in sorted(table.items()):
            total = sum(counts.values())
            out = counts["withdrawn"] + counts["refused"]
            rows.append({"regime": regime, "purpose": purpose, "scope": scope,
                         "granted": counts["granted"], "withdrawn": counts["withdrawn"],
                         "refused": counts["refused"], "expired": counts["expired"],
                         "total": total, "opt_out_rate": round(out / total, 4) if total else 0.0})
        by_kind: Counter[tuple[str, str]] = Counter()
        gpc = conflicts = 0
        for kind, method, conflict, count in events:
            by_kind[(kind, method)] += int(count)
            if method == ConsentMethod.GPC.value:
                gpc += int(count)
                if conflict == GPC_CONFLICT:
                    conflicts += int(count)
        self._k.audit("consent.report", actor=actor, tenant=tenant or "*",
                                 reason="summary")
        return ConsentSummary(
            tenant=tenant, generated_at=self._k.clock.now(), rows=tuple(rows),
            events=tuple({"kind": k, "method": m, "count": n}
                         for (k, m), n in sorted(by_kind.items())),
            gpc_signals=gpc, gpc_conflicts=conflicts)

    # ------------------------------------------------------------------ internals

    def _simple(self, kind: EventKind, subject_id: str, purpose: str, *, tenant: str,
                scope: ConsentScope | str, method: ConsentMethod | str, source: str,
                evidence: str | None, actor: Actor | None) -> ConsentEvent:
        tenant = _tenant(tenant)
        self._k.authorise(actor, "consent", "consent.manage", tenant=tenant)
        try:
            spec = self._spec(purpose, scope, kind, method, source, evidence)
        except InvalidData as exc:
            self._deny(f"consent.{kind.value}", exc, tenant, actor, subject_id)
        return self._record(tenant, subject_id, [spec], actor)[0]

    def _spec(self, purpose: str, scope: ConsentScope | str, kind: EventKind,
              method: ConsentMethod | str, source: str, evidence: str | None) -> _Spec:
        self._k.rules.purposes.get(purpose)
        try:
            scope = ConsentScope(scope)
        except ValueError:
            raise InvalidData("unknown consent scope", field="scope") from None
        try:
            method = ConsentMethod(method)
        except ValueError:
            raise InvalidData("unknown consent method", field="method") from None
        if evidence is not None:
            evidence = _text(evidence, "evidence", 255)
        return _Spec(purpose, scope, kind, method, _text(source, "source"), evidence)

    def _deny(self, action: str, exc: VaultError, tenant: str, actor: Actor | None,
              subject_id: object) -> Any:
        subjects: tuple[str, ...] = ()
        if isinstance(subject_id, str):
            with contextlib.suppress(InvalidData):
                subjects = (self._k.pseudonym(tenant, check_identifier(subject_id,
                                                                           "subject_id")),)
        self._k.audit(action, actor=actor, tenant=tenant, decision=Decision.DENY,
                                 reason=exc.code, subjects=subjects)
        raise exc

    def _read_access(self, action: str, subject_id: str, tenant: str, actor: Actor | None
                     ) -> tuple[str, str]:
        tenant = _tenant(tenant)
        self._k.authorise(actor, "consent", "consent.manage", tenant=tenant)
        check_identifier(subject_id, "subject_id")
        self._k.audit(action, actor=actor, tenant=tenant,
                                 subjects=(self._k.pseudonym(tenant, subject_id),))
        return tenant, subject_id

    def _jurisdiction(self, tenant: str, subject_id: str, conn: Connection | None = None,
                      *, lock: bool = False) -> str | None:
        query = select(_SUBJECTS.c.jurisdiction).where(
            _SUBJECTS.c.tenant == tenant, _SUBJECTS.c.subject_id == subject_id)
        if lock:
            query = query.with_for_update()
        if conn is None:
            with self._k.engine.connect() as own:
                row = own.execute(query).one_or_none()
        else:
            row = conn.execute(query).one_or_none()
        if row is None:
            raise NotFound(f"no data subject {subject_id} in tenant {tenant}")
        return cast(str | None, row.jurisdiction)

    def _record(self, tenant: str, subject_id: str, specs: Sequence[_Spec],
                actor: Actor | None) -> list[ConsentEvent]:
        """Append events, update states, sign receipts and audit: one transaction."""
        k = self._k
        action = f"consent.{'gpc' if specs and specs[0].gpc else specs[0].kind.value}"
        try:
            check_identifier(subject_id, "subject_id")
        except InvalidData as exc:
            self._deny(action, exc, tenant, actor, None)
        pseudonym = k.pseudonym(tenant, subject_id)
        signing_key = k.root_keys.signing_key()
        by = actor_id(actor)
        recorded: list[ConsentEvent] = []
        try:
            for attempt in transaction_attempts():
                with attempt, k.engine.begin() as conn:
                    recorded = []
                    jurisdiction = self._jurisdiction(tenant, subject_id, conn, lock=True)
                    regime = k.rules.jurisdictions.regime_for(jurisdiction)
                    now = k.clock.now()
                    audit: list[AuditEvent] = []
                    for spec in specs:
                        previous_row = conn.execute(select(_STATE).where(
                            _STATE.c.tenant == tenant, _STATE.c.subject_id == subject_id,
                            _STATE.c.purpose == spec.purpose, _STATE.c.scope == spec.scope.value
                        )).one_or_none()
                        previous = None if previous_row is None else state_from(previous_row)
                        conflict = None
                        if (spec.gpc and previous is not None
                                and previous.status_at(now) is ConsentStatus.GRANTED):
                            conflict = GPC_CONFLICT
                        notice = spec.notice
                        event = ConsentEvent(
                            event_id=uuid.uuid4().hex, seq=0, tenant=tenant,
                            subject_id=subject_id, purpose=spec.purpose, scope=spec.scope,
                            kind=spec.kind, regime=regime, jurisdiction=jurisdiction,
                            method=spec.method,
                            notice_id=notice.id if notice else None,
                            notice_version=notice.version if notice else None,
                            notice_hash=notice.text_sha256 if notice else None,
                            occurred_at=now, expires_at=spec.expires_at, source=spec.source,
                            evidence=spec.evidence, conflict=conflict, actor=by)
                        body = build_receipt(event, vault_id=k.vault_id, notice=notice,
                                             public_key=signing_key.public_key())
                        result = conn.execute(insert(_EVENTS).values(
                            event_id=event.event_id, tenant=tenant, subject_id=subject_id,
                            purpose=event.purpose, scope=event.scope.value,
                            kind=event.kind.value, regime=regime, jurisdiction=jurisdiction,
                            method=event.method.value, notice_id=event.notice_id,
                            notice_version=event.notice_version, notice_hash=event.notice_hash,
                            occurred_at=now, expires_at=event.expires_at, source=event.source,
                            evidence=event.evidence, conflict=conflict, actor=by,
                            receipt=json.dumps(body, sort_keys=True, ensure_ascii=False),
                            signature=sign_receipt(body, signing_key)))
                        seq = int(cast(Any, result.inserted_primary_key)[0])
                        event = _with_seq(event, seq)
                        state = apply_event(previous, event)
                        values = {
                            "status": state.status.value, "regime": state.regime,
                            "notice_id": state.notice_id, "notice_version": state.notice_version,
                            "expires_at": state.expires_at, "event_id": state.event_id,
                            "event_seq": state.event_seq, "updated_at": state.updated_at}
                        if previous is None:
                            conn.execute(insert(_STATE).values(
                                tenant=tenant, subject_id=subject_id, purpose=state.purpose,
                                scope=state.scope.value, **values))
                        else:
                            conn.execute(update(_STATE).where(
                                _STATE.c.tenant == tenant, _STATE.c.subject_id == subject_id,
                                _STATE.c.purpose == state.purpose,
                                _STATE.c.scope == state.scope.value).values(**values))
                        reason = f"{event.scope.value}:{event.method.value}"
                        if conflict:
                            reason += f":{conflict}"
                        audit.append(AuditEvent(
                            tenant=tenant, actor=by, action=action,
                            decision=Decision.ALLOW, subjects=(pseudonym,),
                            purpose=event.purpose, reason=reason[:REASON_LIMIT],
                            record_ids=(event.event_id,)))
                        recorded.append(event)
                    k.audit_log.append(conn, audit)
                    if k.rules.jurisdictions.profile(regime).erase_on_withdrawal:
                        self._queue_erasure(conn, tenant, subject_id, recorded, actor)
        except NotFound as exc:
            self._deny(action, exc, tenant, actor, subject_id)
        return recorded

    def _queue_erasure(self, conn: Connection, tenant: str, subject_id: str,
                       recorded: Sequence[ConsentEvent], actor: Actor | None) -> None:
        """PIPL Art. 47(1)(3), in the transaction of the events.

        A withdrawal that ends a general consent the subject had given queues
        deletion of the data held only on consent; a withdrawal (a GPC opt-out,
        say) of a purpose never consented to, or already withdrawn, ends no consent
        and queues nothing. A deletion already queued keeps its (earlier) time: a
        later withdrawal never postpones it. A grant calls the deletion off only
        when it gives back an ended consent and no ended consent is left: a consent
        to another purpose is not a consent to the withdrawn one again, nor an
        answer to a withdrawal or objection recorded outside the ledger.
        """
        general = [e for e in recorded if e.scope is ConsentScope.GENERAL]
        if not any(e.kind in (EventKind.WITHDRAW, EventKind.GRANT) for e in general):
            return
        # Replay the subject's general events (a handful): purposes whose newest
        # withdrawal ended a grant, with no grant since; before and after this
        # transaction's events, and which of these ended a grant.
        ours = {e.seq for e in general}
        last: dict[str, str] = {}
        ended: set[str] = set()
        ended_before: set[str] | None = None
        ending: set[int] = set()
        for seq, purpose, kind in conn.execute(select(
                _EVENTS.c.seq, _EVENTS.c.purpose, _EVENTS.c.kind).where(
                _EVENTS.c.tenant == tenant, _EVENTS.c.subject_id == subject_id,
                _EVENTS.c.scope == ConsentScope.GENERAL.value).order_by(_EVENTS.c.seq)):
            if ended_before is None and seq in ours:
                ended_before = set(ended)
            if kind == EventKind.WITHDRAW.value and last.get(purpose) == EventKind.GRANT.value:
                ended.add(purpose)
                if seq in ours:
                    ending.add(seq)
            elif kind == EventKind.GRANT.value:
                ended.discard(purpose)
            last[purpose] = kind
        withdrawn = [e for e in general if e.seq in ending]
        if withdrawn:
            first = withdrawn[0]
            queued = conn.execute(select(_RETENTION_EVENTS.c.consent_withdrawn).where(
                _RETENTION_EVENTS.c.tenant == tenant,
                _RETENTION_EVENTS.c.subject_id == subject_id)).scalar_one_or_none()
            if queued is None or queued > first.occurred_at:
                self._hooks.consent_withdrawn(conn, tenant, subject_id, first.purpose,
                                              first.occurred_at, actor)
        elif ended_before and not ended:
            self._hooks.consent_regranted(conn, tenant, subject_id, general[-1].purpose,
                                          actor)


def _with_seq(event: ConsentEvent, seq: int) -> ConsentEvent:
    return replace(event, seq=seq)


def _text(value: object, what: str, limit: int = 128) -> str:
    """A short free-text id (source system, evidence reference): printable, bounded."""
    if not isinstance(value, str) or not value.strip() or len(value) > limit or not (
            value.isprintable()):
        raise InvalidData(f"{what} must be a short printable reference", field=what)
    return value.strip()
