"""What a data-subject request is: its states, the moves between them, and the
frozen :class:`DSARRequest` the service returns. Pure: no I/O.

The lifecycle::

    received ──verify──> identity_verified ──process──> in_progress ──> completed
        │                       │                            │      └─> partially_completed
        └──────reject───────────┴──────────reject────────────┴────────> rejected

``acknowledge`` and ``extend`` are events on an open request, not states: the
acknowledgement gates nothing (it is reported when late), an extension sets
``extended`` and a new due date. A move the lifecycle does not allow raises
:class:`~vault.errors.InvalidTransition`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from vault.errors import InvalidTransition
from vault.jurisdiction import RequestKind

# What vault.dsar exports; the lifecycle's moves and state sets (``Move``,
# ``check_move``, ``OPEN_STATES``, ``CLOSED_STATES``) serve the service.
__all__ = ["DSARRequest", "RejectReason", "RequestKind", "RequestState", "Transition",
           "Verification", "VerificationResult"]


class RequestState(StrEnum):
    """Where a request is in its lifecycle (persisted)."""

    RECEIVED = "received"
    IDENTITY_VERIFIED = "identity_verified"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    PARTIALLY_COMPLETED = "partially_completed"
    REJECTED = "rejected"


OPEN_STATES = frozenset({RequestState.RECEIVED, RequestState.IDENTITY_VERIFIED,
                         RequestState.IN_PROGRESS})
CLOSED_STATES = frozenset({RequestState.COMPLETED, RequestState.PARTIALLY_COMPLETED,
                           RequestState.REJECTED})


class Move(StrEnum):
    """The methods that change a request."""

    ACKNOWLEDGE = "acknowledge"
    VERIFY = "verify"
    EXTEND = "extend"
    PROCESS = "process"
    COMPLETE = "complete"
    REJECT = "reject"


# Which states each move may start from. ``process`` may resume a request left
# in progress (a fulfilment interrupted by an error is taken up again).
_FROM: Mapping[Move, frozenset[RequestState]] = {
    Move.ACKNOWLEDGE: OPEN_STATES,
    Move.VERIFY: frozenset({RequestState.RECEIVED}),
    Move.EXTEND: OPEN_STATES,
    Move.PROCESS: frozenset({RequestState.IDENTITY_VERIFIED, RequestState.IN_PROGRESS}),
    Move.COMPLETE: frozenset({RequestState.IN_PROGRESS}),
    Move.REJECT: OPEN_STATES,
}


def check_move(request_id: str, state: RequestState, move: Move) -> None:
    """Raise InvalidTransition unless ``move`` may start from ``state``."""
    if state not in _FROM[move]:
        raise InvalidTransition(f"request {request_id} is {state.value}: it cannot {move.value}",
                                request_id=request_id, state=state.value)


class RejectReason(StrEnum):
    """Why a request is refused (GDPR Art. 12(4), PIPL Art. 50, CCPA §7022(f))."""

    IDENTITY_NOT_VERIFIED = "identity_not_verified"
    MANIFESTLY_UNFOUNDED = "manifestly_unfounded"     # GDPR Art. 12(5)
    EXCESSIVE = "excessive"                           # GDPR Art. 12(5)
    REQUEST_LIMIT = "request_limit"                   # CCPA §1798.130(a)(7)
    NO_DATA_HELD = "no_data_held"
    EXEMPTION = "exemption"                           # a statutory exemption applies
    AGENT_NOT_AUTHORISED = "agent_not_authorised"
    WITHDRAWN_BY_REQUESTER = "withdrawn_by_requester"
    OTHER = "other"


class VerificationResult(StrEnum):
    PENDING = "pending"
    NOT_REQUIRED = "not_required"
    VERIFIED = "verified"
    ACCEPTED_AS_KNOWN = "accepted_as_known"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Verification:
    """The verification a request needs and what came of it (no evidence values).

    Attributes:
        tier: the profile key the tier came from (a right, a kind or ``default``).
        points: matching data points required.
        declaration: whether a signed declaration is required.
        accept_as_known: whether the DPO may accept the requester as known.
        result: what came of it so far.
        matched: data points that matched at the last attempt.
        failed_attempts: failed attempts so far.
        max_failed: failed attempts after which the request is rejected.
    """

    tier: str
    points: int
    declaration: bool
    accept_as_known: bool
    result: VerificationResult
    matched: int
    failed_attempts: int
    max_failed: int


@dataclass(frozen=True, slots=True)
class Transition:
    """One entry of a request's append-only history."""

    seq: int
    at: dt.datetime
    actor: str
    event: str
    from_state: RequestState | None
    to_state: RequestState | None
    reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DSARRequest:
    """A data-subject request as stored (ids, codes and dates; never the requester's
    contact details or the subject's data).

    Attributes:
        id: the request id.
        kind: the kind of request.
        right: the profile's name of the right exercised (``know``, ``copy``...),
            whose clock applies; the kind itself for a courtesy request.
        state: where it is in the lifecycle.
        regime: the regime whose clocks and rules apply.
        subject_id: the data subject, None until matched.
        received_at: when it was received.
        received_on: the day of receipt in the controller's zone.
        acknowledge_by: the last day to confirm receipt, or None.
        acknowledged_at: when receipt was confirmed, or None.
        due_on: the last day on which the response is on time.
        first_due_on: the due day before any extension.
        extended: whether the period was extended.
        notified_at: when the requester was told of the extension.
        verification: the tier and its result.
        history: every move, oldest first.
        result: what fulfilment produced (paths, counts, certificate), no PII.
        reject_reason: the reason code of a rejection.
        closed_at: when it was completed or rejected.
    """

    id: str
    tenant: str
    kind: RequestKind
    right: str
    state: RequestState
    regime: str
    jurisdiction: str | None
    subject_id: str | None
    channel: str
    agent: str | None
    received_at: dt.datetime
    received_on: dt.date
    acknowledge_by: dt.date | None
    acknowledged_at: dt.datetime | None
    due_on: dt.date
    first_due_on: dt.date
    extended: bool
    notified_at: dt.datetime | None
    verification: Verification
    history: tuple[Transition, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    result: Mapping[str, Any] = field(default_factory=dict)
    reject_reason: str | None = None
    closed_at: dt.datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def overdue_on(self, today: dt.date) -> bool:
        """Whether the request is open past its due day on ``today`` (a date in the
        controller's zone)."""
        return self.is_open and today > self.due_on
