"""Consent events and states, and the pure rules that derive one from the other.

The ledger is a sequence of :class:`ConsentEvent` (grant, withdraw, refuse,
expire) per (tenant, subject, purpose, scope); the *state* of a key is what
its newest event says (:func:`apply`), and :func:`replay` rebuilds every state
from the full history. The database keeps both (the state table is updated in
the same transaction as the event is appended); a property test holds them
equal.

``scope`` separates the ordinary consent to a purpose (``general``) from the
separate consents PIPL asks for (``sensitive``, ``provide_to_third_party``,
``cross_border``): a separate consent is an event of its own, never implied by
the general one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ConsentEvent", "ConsentKey", "ConsentMethod", "ConsentScope", "ConsentState",
           "ConsentStatus", "EventKind", "apply", "replay"]


class EventKind(StrEnum):
    GRANT = "grant"
    WITHDRAW = "withdraw"
    REFUSE = "refuse"
    EXPIRE = "expire"


class ConsentStatus(StrEnum):
    """The state a key is in after its newest event."""

    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    REFUSED = "refused"
    EXPIRED = "expired"


_STATUS_OF = {
    EventKind.GRANT: ConsentStatus.GRANTED,
    EventKind.WITHDRAW: ConsentStatus.WITHDRAWN,
    EventKind.REFUSE: ConsentStatus.REFUSED,
    EventKind.EXPIRE: ConsentStatus.EXPIRED,
}


class ConsentMethod(StrEnum):
    """How the consent decision reached Vault."""

    WEB_FORM = "web_form"
    API = "api"
    IMPORT = "import"
    GPC = "gpc"
    AGENT = "agent"


class ConsentScope(StrEnum):
    """The ordinary consent, or one of the separate consents (PIPL 单独同意)."""

    GENERAL = "general"
    SENSITIVE = "sensitive"
    PROVIDE_TO_THIRD_PARTY = "provide_to_third_party"
    CROSS_BORDER = "cross_border"


@dataclass(frozen=True, slots=True)
class ConsentKey:
    tenant: str
    subject_id: str
    purpose: str
    scope: ConsentScope


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """One immutable ledger entry.

    Attributes:
        event_id: public id (also the receipt id).
        seq: position in the ledger (database order); 0 before it is stored.
        regime: the subject's regime when the event was recorded.
        jurisdiction: the subject's jurisdiction code then.
        notice_id, notice_version, notice_hash: the notice shown (grants).
        occurred_at: when Vault recorded the decision (its clock).
        expires_at: a grant's end of validity, if any.
        source: the system the decision came from (``web-shop``, ``gateway``).
        evidence: a reference to the evidence kept elsewhere (form submission
            id, call recording id); an id, never personal data.
        conflict: set when the event overrode an earlier contrary decision
            (``gpc_overrides_opt_in``).
        actor: who recorded it.
    """

    event_id: str
    seq: int
    tenant: str
    subject_id: str
    purpose: str
    scope: ConsentScope
    kind: EventKind
    regime: str
    jurisdiction: str | None
    method: ConsentMethod
    notice_id: str | None
    notice_version: int | None
    notice_hash: str | None
    occurred_at: dt.datetime
    expires_at: dt.datetime | None
    source: str
    evidence: str | None
    conflict: str | None
    actor: str

    @property
    def key(self) -> ConsentKey:
        return ConsentKey(self.tenant, self.subject_id, self.purpose, self.scope)


@dataclass(frozen=True, slots=True)
class ConsentState:
    """The current state of one (tenant, subject, purpose, scope)."""

    tenant: str
    subject_id: str
    purpose: str
    scope: ConsentScope
    status: ConsentStatus
    regime: str
    notice_id: str | None
    notice_version: int | None
    expires_at: dt.datetime | None
    event_id: str
    event_seq: int
    updated_at: dt.datetime

    @property
    def key(self) -> ConsentKey:
        return ConsentKey(self.tenant, self.subject_id, self.purpose, self.scope)

    def status_at(self, now: dt.datetime) -> ConsentStatus:
        """The status, with a grant past its ``expires_at`` read as expired."""
        if (self.status is ConsentStatus.GRANTED and self.expires_at is not None
                and self.expires_at <= now):
            return ConsentStatus.EXPIRED
        return self.status


def apply(previous: ConsentState | None, event: ConsentEvent) -> ConsentState:
    """The state after ``event``.

    The newest event decides: a withdrawal ends a grant, a new grant replaces
    a withdrawal. A grant keeps the notice it was given against (re-consent
    is judged against it); other events carry no notice.

    Raises:
        ValueError: the event belongs to another key, or is older than the state.
    """
    if previous is not None:
        if previous.key != event.key:
            raise ValueError("event of another consent key")
        if event.seq and previous.event_seq and event.seq < previous.event_seq:
            raise ValueError("event older than the state")
    granted = event.kind is EventKind.GRANT
    return ConsentState(
        tenant=event.tenant, subject_id=event.subject_id, purpose=event.purpose,
        scope=event.scope, status=_STATUS_OF[event.kind], regime=event.regime,
        notice_id=event.notice_id if granted else None,
        notice_version=event.notice_version if granted else None,
        expires_at=event.expires_at if granted else None,
        event_id=event.event_id, event_seq=event.seq, updated_at=event.occurred_at,
    )


def replay(events: Iterable[ConsentEvent]) -> Mapping[ConsentKey, ConsentState]:
    """Rebuild every state from a history, in ledger (``seq``) order."""
    states: dict[ConsentKey, ConsentState] = {}
    for event in sorted(events, key=lambda e: e.seq):
        states[event.key] = apply(states.get(event.key), event)
    return states
