"""``v.dsar``: data-subject requests, from receipt to a signed answer.

Every method is one move of a request (:mod:`vault.dsar.model`): authorised by
the policy (``dsar.submit``, ``dsar.read``, ``dsar.acknowledge``,
``dsar.verify``, ``dsar.extend``, ``dsar.process``, ``dsar.complete``,
``dsar.reject``, ``dsar.report`` on the ``dsar`` object; the DPO's in the
default policy), written with its history entry (``dsar_events``, append-only)
and its audit entry (actor, request id, reason code; the subject's pseudonym
once matched) in one transaction. A move the lifecycle forbids raises
:class:`~vault.errors.InvalidTransition` and changes nothing.

Due dates are computed at submission by the statutory clocks
(:mod:`vault.dsar.clocks`) from the regime's profile and stored with the
request (recomputed on extension). The requester's own identifiers are kept
only as keyed digests (to match a subject through the blind indexes) and
sealed under a data key of the request (``dsar.<id>`` in the key store); an
identifier widens a request's scope only through :meth:`DSARService.verify`.

Fulfilment (:mod:`vault.dsar.fulfil`) goes through the services below: the
data path reads and rectifies, ``keys.destroy`` crypto-shreds, the consent
ledger records objections and opt-outs, ``subjects.restrict`` restricts.
"""

from __future__ import annotations

import builtins
import calendar
import contextlib
import datetime as dt
import json
import re
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from vault._kernel import Kernel, transaction_failed
from vault.audit.chain import Decision
from vault.crypto.envelope import FieldContext
from vault.dsar import clocks
from vault.dsar.fulfil import Fulfiller, FulfilServices, Outcome, Progress
from vault.dsar.identity import Digest, digests_of, matching_subjects, points_for
from vault.dsar.model import (
    CLOSED_STATES,
    DSARRequest,
    Move,
    RejectReason,
    RequestKind,
    RequestState,
    Transition,
    Verification,
    VerificationResult,
    check_move,
)
from vault.dsar.report import DSARReport, build_report
from vault.dsar.tables import DSAR_EVENTS, DSAR_REQUESTS
from vault.errors import (
    InvalidData,
    InvalidTransition,
    NotFound,
    RightNotGranted,
    ShreddingIncomplete,
)
from vault.jurisdiction import JurisdictionProfile, VerificationTier
from vault.store.retry import transaction_attempts
from vault.store.tables import SUBJECTS
from vault.types import Actor, actor_id, check_identifier, check_jurisdiction, check_tenant

__all__ = ["CHANNELS", "DSARService", "PurgeResult"]

T = TypeVar("T")

#: How a request reached the controller.
CHANNELS = frozenset({"web", "email", "post", "phone", "in_person", "api", "agent", "gpc"})
#: The kinds of request whose processing is an export or an erasure (step-up).
_STEP_UP = {RequestKind.ACCESS: "export", RequestKind.PORTABILITY: "export",
            RequestKind.ERASURE: "erase"}
_CODE = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")
# A free-text note must not carry contact details: no e-mail address, no long number.
_NOTE = re.compile(r"[\w .,;:()'/#-]{1,200}")
_LONG_NUMBER = re.compile(r"\d[\d ()-]{6,}\d")
#: Keys ``details`` may carry: codes only, never the requester's words.
_DETAIL_KEYS = frozenset({"purposes", "collections", "categories_only", "direct_marketing"})
#: A ``received_at`` this far before now needs a reason (a letter opened late).
_LATE_RECEIPT = dt.timedelta(hours=24)
_FUTURE_SLACK = dt.timedelta(minutes=5)
_KEY_COLLECTION = "dsar_requests"


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What :meth:`DSARService.purge` removed."""

    requests: int
    exports: int


def _add_months(instant: dt.datetime, months: int) -> dt.datetime:
    year, month0 = divmod(instant.year * 12 + instant.month - 1 + months, 12)
    day = min(instant.day, calendar.monthrange(year, month0 + 1)[1])
    return instant.replace(year=year, month=month0 + 1, day=day)
_PURPOSE = "dsar_fulfilment"


def _code(value: object, what: str) -> str:
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        raise InvalidData(f"{what} must be a short code (a-z, 0-9, _.:-)", field=what)
    return value


def _note(value: object) -> str | None:
    if value is None:
        return None
    if (not isinstance(value, str) or not _NOTE.fullmatch(value) or "@" in value
            or _LONG_NUMBER.search(value)):
        raise InvalidData("note must be 1-200 letters, digits, spaces and punctuation, "
                          "with no e-mail address or phone number", field="note")
    return value


def _aware(value: object, what: str) -> dt.datetime:
    """A timezone-aware time between 1970 and 2999 (a date outside cannot be a
    request's, and far-off ones overflow the time-zone arithmetic)."""
    if (not isinstance(value, dt.datetime) or value.tzinfo is None
            or value.utcoffset() is None):
        raise InvalidData(f"{what} must be a timezone-aware datetime", field=what)
    try:
        year = value.astimezone(dt.UTC).year
    except OverflowError:
        year = 0
    if not 1970 <= year < 3000:
        raise InvalidData(f"{what} is out of range (1970 to 2999)", field=what)
    return value


def _details(details: object) -> dict[str, Any]:
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise InvalidData("details must be a mapping", field="details")
    out: dict[str, Any] = {}
    for key, value in details.items():
        if key not in _DETAIL_KEYS:
            raise InvalidData(f"details: unknown key (allowed: {', '.join(sorted(_DETAIL_KEYS))})",
                              field="details")
        if isinstance(value, bool):
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [_code(v, "details") for v in value]
        else:
            raise InvalidData("details values must be true/false or lists of codes",
                              field="details")
    return out


class DSARService:
    """Data-subject requests: submit, verify, extend, process, complete, reject, report."""

    def __init__(self, kernel: Kernel, *, services: FulfilServices) -> None:
        self._k = kernel
        self._clocks: dict[str, tuple[clocks.ClockProfile, clocks.HolidayCalendar]] = {}
        self._fulfil = Fulfiller(kernel, services)

    # ------------------------------------------------------------------ intake

    def submit(
        self,
        actor: Actor | None,
        kind: str,
        *,
        tenant: str,
        subject_id: str | None = None,
        identifiers: Mapping[str, object] | None = None,
        received_at: dt.datetime | None = None,
        channel: str = "web",
        agent: str | None = None,
        details: Mapping[str, Any] | None = None,
        jurisdiction: str | None = None,
        received_reason: str | None = None,
        agent_authorisation: str | None = None,
    ) -> DSARRequest:
        """Record a request and compute its due dates.

        Args:
            actor: who records it (``dsar.submit``); None is the local operator.
            kind: a kind (:class:`RequestKind`: ``access``, ``erasure``...) or the
                name of a right in the subject's profile (``know``, ``delete``,
                ``copy``...), whose clock and verification tier then apply.
            tenant: the tenant of the subject.
            subject_id: the subject, when the requester is already known (a
                signed-in customer); still to be verified.
            identifiers: what the requester gave (``email``, ``phone``...: the
                searchable fields), matched to a subject through the blind
                indexes. They never widen the request by themselves: only
                :meth:`verify` settles whose data it is.
            received_at: when it was received (aware; default now). More than a
                day in the past needs ``received_reason`` (audited).
            channel: web, email, post, phone, in_person, api, agent or gpc.
            agent: the id of an authorised agent acting for the subject, with
                ``agent_authorisation`` (a reference to the signed permission).
            details: codes only: ``purposes`` (objection, withdrawal),
                ``collections``, ``categories_only``, ``direct_marketing``.
            jurisdiction: the requester's stated residency, used for the regime
                while no subject is matched.

        Returns:
            The request; a duplicate open request of the same kind for the same
            subject is returned instead (the new receipt is linked to it in its
            history, not doubled).

        Raises:
            InvalidData: an unknown kind, a malformed argument (field names only).
            RightNotGranted: the subject's regime grants no such request.
            NotFound: ``subject_id`` is not a subject of the tenant.
            AccessDenied: ``actor`` may not submit requests (audited).
        """
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "dsar", "dsar.submit", tenant=tenant)
        now = self._k.clock.now()
        received_at = now if received_at is None else _aware(received_at, "received_at")
        if received_at > now + _FUTURE_SLACK:
            raise InvalidData("received_at is in the future", field="received_at")
        late = None
        if received_at < now - _LATE_RECEIPT:
            if received_reason is None:
                raise InvalidData("a received_at in the past needs a received_reason",
                                  field="received_reason")
            late = _code(received_reason, "received_reason")
        if channel not in CHANNELS:
            raise InvalidData(f"channel must be one of {', '.join(sorted(CHANNELS))}",
                              field="channel")
        if agent is not None:
            check_identifier(agent, "agent")
            if agent_authorisation is None:
                raise InvalidData("an agent needs a recorded authorisation",
                                  field="agent_authorisation")
            check_identifier(agent_authorisation, "agent_authorisation")
        if jurisdiction is not None:
            check_jurisdiction(jurisdiction)
        if subject_id is not None:
            check_identifier(subject_id, "subject_id")
        clean_details = _details(details)
        given = dict(identifiers or {})
        digests = digests_of(self._k, tenant, given, verifiable=False, what="identifiers")

        with self._k.read_only() as conn:
            matches = matching_subjects(conn, tenant, digests)
            if subject_id is not None:
                known = conn.execute(select(SUBJECTS.c.jurisdiction).where(
                    SUBJECTS.c.tenant == tenant, SUBJECTS.c.subject_id == subject_id)).first()
                if known is None:
                    raise NotFound(f"no data subject {subject_id} in tenant {tenant}")
        candidates = set().union(*matches.values()) if matches else set()
        # Identifiers pointing at more than one subject pick none of them: the
        # request stays unmatched until verification settles whose it is.
        matched = subject_id if subject_id is not None else (
            next(iter(candidates)) if len(candidates) == 1 else None)
        subject_jurisdiction = self._jurisdiction_of(tenant, matched) if matched else jurisdiction
        regime = self._k.rules.jurisdictions.regime_for(subject_jurisdiction)
        profile = self._k.rules.jurisdictions.profile(regime)
        request_kind, right = self._resolve(actor, tenant, kind, profile, matched)
        if matched is not None:
            duplicate = self._open_duplicate(tenant, matched, request_kind)
            if duplicate is not None:
                return self._link(actor, duplicate, channel, received_at)

        cp, calendar = self._clock(regime)
        acknowledge_by = clocks.acknowledge_by(cp, right, received_at, calendar=calendar)
        due_on = clocks.respond_by(cp, right, received_at, calendar=calendar)
        tier_key, tier = self._tier(profile, right, request_kind)
        request_id = uuid.uuid4().hex
        sealed = self._seal_identifiers(tenant, request_id, given, agent)
        state = RequestState.RECEIVED
        verification = VerificationResult.PENDING
        if tier.points == 0 and not tier.declaration:
            verification = VerificationResult.NOT_REQUIRED
        row = {
            "id": request_id, "tenant": tenant, "kind": request_kind.value, "right": right,
            "regime": regime, "jurisdiction": subject_jurisdiction, "subject_id": matched,
            "state": state.value, "channel": channel, "agent": agent,
            "agent_authorisation": agent_authorisation, "received_at": received_at,
            "received_on": clocks.day_of_receipt(cp, received_at),
            "acknowledge_by": acknowledge_by, "acknowledged_at": None, "due_on": due_on,
            "first_due_on": due_on, "extended": False, "notified_at": None,
            "tier": tier_key, "verification": verification.value, "failed_attempts": 0,
            "identifier_digests": json.dumps(sorted(
                f"{d.collection}|{d.field}|{d.name}|{d.digest.hex()}" for d in digests)),
            "identifiers_sealed": sealed, "details": json.dumps(clean_details, sort_keys=True),
            "result": "{}", "reject_reason": None, "closed_at": None, "created_at": now,
            "version": 1,
        }
        limited = matched is not None and self._over_limit(tenant, matched, profile,
                                                          request_kind, received_at)

        def body(conn: Connection) -> None:
            current = dict(row)  # _move updates it; a retried attempt starts afresh
            conn.execute(insert(DSAR_REQUESTS), [current])
            reason = f"kind:{request_kind.value}:right:{right}:channel:{channel}"
            if late:
                reason += f":late:{late}"
            if agent:
                reason += f":agent:{agent}"
            self._history(conn, request_id, tenant, actor, "submitted", None, state, reason)
            self._audit(conn, "dsar.submit", actor, tenant, request_id, matched,
                        f"submitted:{request_kind.value}" + (f":late:{late}" if late else ""))
            if verification is VerificationResult.NOT_REQUIRED:
                self._move(conn, current, RequestState.IDENTITY_VERIFIED, actor, "verified",
                           "not_required", "dsar.verify", {})
            if limited:
                self._reject_over_limit(conn, current, actor, now)

        self._run(body)
        return self._get(tenant, request_id)

    # ------------------------------------------------------------------ reads

    def get(self, actor: Actor | None, request_id: str, *, tenant: str) -> DSARRequest:
        """One request with its history.

        Raises:
            NotFound: no such request in the tenant. AccessDenied (``dsar.read``).
        """
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "dsar", "dsar.read", tenant=tenant)
        check_identifier(request_id, "request_id")
        request = self._get(tenant, request_id)
        # Who read which request (and so about whom) is itself audited.
        self._k.audit("dsar.read", actor=actor, tenant=tenant, reason=f"request:{request.id}",
                      subjects=self._named(tenant, request.subject_id))
        return request

    def list(self, actor: Actor | None, *, tenant: str, state: str | None = None,
             overdue: bool = False, due_within: int | None = None,
             kind: str | None = None, acknowledgement_due: bool = False
             ) -> list[DSARRequest]:
        """Requests of the tenant, earliest due first.

        Args:
            state: only requests in this state.
            overdue: only open requests past their due day (in the regime's zone).
            due_within: only open requests due within this many days from today.
            kind: only requests of this kind.
            acknowledgement_due: only open requests not yet acknowledged that have an
                acknowledgement clock.
        """
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "dsar", "dsar.read", tenant=tenant)
        query = select(DSAR_REQUESTS.c.id).where(DSAR_REQUESTS.c.tenant == tenant)
        if state is not None:
            try:
                query = query.where(DSAR_REQUESTS.c.state == RequestState(state).value)
            except ValueError:
                raise InvalidData("unknown state", field="state") from None
        if kind is not None:
            query = query.where(DSAR_REQUESTS.c.kind == self._kind(kind).value)
        if due_within is not None and (isinstance(due_within, bool) or not isinstance(
                due_within, int) or due_within < 0):
            raise InvalidData("due_within must be a number of days", field="due_within")
        with self._k.read_only() as conn:
            ids = list(conn.execute(query.order_by(DSAR_REQUESTS.c.due_on,
                                                   DSAR_REQUESTS.c.received_at)).scalars())
        requests = [self._get(tenant, i) for i in ids]
        now = self._k.clock.now()
        picked = []
        for r in requests:
            today = now.astimezone(self._clock(r.regime)[0].zone).date()
            if overdue and not r.overdue_on(today):
                continue
            if due_within is not None and not (
                    r.is_open and r.due_on <= today + dt.timedelta(days=due_within)):
                continue
            if acknowledgement_due and not (r.is_open and r.acknowledge_by is not None
                                            and r.acknowledged_at is None):
                continue
            picked.append(r)
        self._k.audit("dsar.read", actor=actor, tenant=tenant, reason=f"listed:{len(picked)}")
        return picked

    def _named(self, tenant: str, subject_id: str | None) -> tuple[str, ...]:
        return () if subject_id is None else (self._k.pseudonym(tenant, subject_id),)

    def find_subjects(self, actor: Actor | None, *, tenant: str,
                      identifiers: Mapping[str, object]) -> builtins.list[str]:
        """The subjects whose records hold these identifiers (every one of them), through
        the blind indexes: nothing is decrypted. Audited (``dsar.find_subjects``, with
        the pseudonyms found and the fields used, never the values).

        Raises:
            InvalidData: no identifier, a field that is not searchable, a malformed value.
            AccessDenied: ``actor`` may not read requests (``dsar.read``).
        """
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "dsar", "dsar.read", tenant=tenant)
        if not identifiers:
            raise InvalidData("give at least one identifier", field="identifiers")
        digests = digests_of(self._k, tenant, identifiers, verifiable=False,
                             what="identifiers")
        with self._k.read_only() as conn:
            matches = matching_subjects(conn, tenant, digests)
        by_field: dict[str, set[str]] = {}
        for key, subjects in matches.items():
            by_field.setdefault(key.rpartition(".")[2], set()).update(subjects)
        found = sorted(set.intersection(*by_field.values())) if by_field else []
        self._k.audit("dsar.find_subjects", actor=actor, tenant=tenant,
                      subjects=tuple(self._k.pseudonym(tenant, s) for s in found),
                      fields=tuple(sorted(by_field)), purpose=_PURPOSE,
                      reason=f"matched:{len(found)}")
        return found

    def report(self, actor: Actor | None, *, tenant: str, since: dt.datetime | None = None,
               until: dt.datetime | None = None) -> DSARReport:
        """On-time rate, median days to close, open and overdue by regime and kind,
        and the request log (``dsar.report``; ids, codes and dates only).

        Figures come from the append-only history: the closing event's time
        against the due day, in the regime's zone.
        """
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "dsar", "dsar.report", tenant=tenant)
        for name, value in (("since", since), ("until", until)):
            if value is not None:
                _aware(value, name)
        query = select(DSAR_REQUESTS.c.id).where(DSAR_REQUESTS.c.tenant == tenant)
        if since is not None:
            query = query.where(DSAR_REQUESTS.c.received_at >= since)
        if until is not None:
            query = query.where(DSAR_REQUESTS.c.received_at < until)
        with self._k.read_only() as conn:
            ids = list(conn.execute(query.order_by(DSAR_REQUESTS.c.received_at)).scalars())
        requests = [self._get(tenant, i) for i in ids]
        now = self._k.clock.now()
        self._k.audit("dsar.report", actor=actor, tenant=tenant, reason=f"requests:{len(ids)}")
        return build_report(tenant, requests, now, lambda regime: self._clock(regime)[0])

    # ------------------------------------------------------------------ moves

    def acknowledge(self, actor: Actor | None, request_id: str, *, tenant: str,
                    at: dt.datetime | None = None) -> DSARRequest:
        """Record that receipt was confirmed to the requester (CCPA §7021(a)). Gates
        nothing; a confirmation after ``acknowledge_by`` is reported as late.

        Raises:
            InvalidTransition: already acknowledged, or the request is closed.
        """
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "dsar", "dsar.acknowledge", tenant=tenant)
        when = self._k.clock.now() if at is None else _aware(at, "at")

        if when > self._k.clock.now() + _FUTURE_SLACK:
            raise InvalidData("at is in the future", field="at")

        def body(conn: Connection) -> None:
            row = self._lock(conn, tenant, request_id)
            if when < row["received_at"]:
                raise InvalidData("at is before the request was received", field="at")
            check_move(request_id, RequestState(row["state"]), Move.ACKNOWLEDGE)
            if row["acknowledged_at"] is not None:
                raise InvalidTransition(f"request {request_id} was already acknowledged",
                                        request_id=request_id, state=row["state"])
            cp = self._clock(row["regime"])[0]
            late = (row["acknowledge_by"] is not None
                    and when.astimezone(cp.zone).date() > row["acknowledge_by"])
            self._move(conn, row, None, actor, "acknowledged", "late" if late else "on_time",
                       "dsar.acknowledge", {"acknowledged_at": when})

        return self._change(tenant, request_id, body)

    def verify(self, actor: Actor | None, request_id: str, *, tenant: str,
               evidence: Mapping[str, object] | None = None,
               accept_as_known: str | None = None,
               declaration: str | None = None) -> DSARRequest:
        """Verify the requester against the subject's records, per the tier.

        ``evidence`` (field name -> value, e.g. ``email``, ``full_name``,
        ``birth_date``) is turned into keyed digests and compared, in constant
        time, with the digests of the subject's records (blind indexes and
        verification-only digests); nothing is decrypted, nothing of the evidence
        is stored or logged. The tier says how many data points must match and
        whether a signed declaration (``declaration``: a reference to it) is
        needed. Where the regime allows it (GDPR Art. 12(6)), the DPO may instead
        ``accept_as_known`` a requester with a reason code.

        A request not yet matched is verified against the subjects its
        identifiers point to: only the one subject the evidence verifies becomes
        the request's; identifiers of anyone else are ignored (counted in the
        history), so an added phone number of somebody else widens nothing.
        A failed attempt is counted; at the profile's ``max_failed_verifications``
        the request is rejected (``identity_not_verified``).

        Returns:
            The request: ``identity_verified``, or still ``received`` with
            ``verification.result`` ``failed``, or ``rejected``.

        Raises:
            InvalidTransition: the request is not awaiting verification.
            InvalidData: a malformed evidence value (the field is named, never the value),
                or ``accept_as_known`` where the regime does not allow it.
        """
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "dsar", "dsar.verify", tenant=tenant)
        current = self._get(tenant, check_identifier(request_id, "request_id"))
        check_move(request_id, current.state, Move.VERIFY)
        profile = self._k.rules.jurisdictions.profile(current.regime)
        tier = current.verification
        if declaration is not None:
            check_identifier(declaration, "declaration")
        if accept_as_known is not None:
            reason = _code(accept_as_known, "accept_as_known")
            if not tier.accept_as_known:
                raise InvalidData("this regime does not let a requester be accepted as known; "
                                  "verify with evidence", field="accept_as_known")
            if current.subject_id is None:
                raise InvalidData("no subject is matched: verify with evidence",
                                  field="accept_as_known")
            verified: str | None = current.subject_id
            matched_points: set[str] = set()
            result = VerificationResult.ACCEPTED_AS_KNOWN
            note = f"accepted_as_known:{reason}"
        else:
            proofs = digests_of(self._k, tenant, evidence or {}, verifiable=True,
                                what="evidence")
            verified, matched_points, ignored = self._check_evidence(
                tenant, current, proofs, tier, declaration is not None)
            note = f"points:{len(matched_points)}/{tier.points}"
            if verified is not None:
                # The subject's own regime may ask for more than the one the request
                # was received under (a stated residency): its tier must be met too.
                change = self._regime_change(current, self._jurisdiction_of(tenant, verified))
                if change:
                    other = self._k.rules.jurisdictions.profile(change["regime"])
                    _, own = self._tier(other, change["right"], current.kind)
                    if len(matched_points) < max(own.points, 1) or (
                            own.declaration and declaration is None):
                        verified = None
                        note += f":tier_of:{other.name}"
            result = (VerificationResult.VERIFIED if verified is not None
                      else VerificationResult.FAILED)
            if ignored:
                note += f":ignored_identifiers:{ignored}"
            if declaration is not None:
                note += f":declaration:{declaration}"
        max_failed = tier.max_failed
        now = self._k.clock.now()
        regime_change: dict[str, Any] = {}
        if verified is not None:
            jurisdiction = self._jurisdiction_of(tenant, verified)
            regime_change = self._regime_change(current, jurisdiction)
            if regime_change:
                profile = self._k.rules.jurisdictions.profile(regime_change["regime"])
                note += f":regime:{current.regime}>{regime_change['regime']}"
            limited = self._over_limit(tenant, verified, profile, current.kind,
                                       current.received_at, excluding=current.id)
        else:
            jurisdiction, limited = current.jurisdiction, False

        def body(conn: Connection) -> None:
            row = self._lock(conn, tenant, request_id)
            check_move(request_id, RequestState(row["state"]), Move.VERIFY)
            if verified is None:
                failed = row["failed_attempts"] + 1
                changes: dict[str, Any] = {"failed_attempts": failed,
                                           "verification": result.value}
                if failed >= max_failed:
                    changes.update(reject_reason=RejectReason.IDENTITY_NOT_VERIFIED.value,
                                   closed_at=now)
                    self._move(conn, row, None, actor, "verification_failed", note,
                               "dsar.verify", changes, decision=Decision.DENY)
                    self._move(conn, row, RequestState.REJECTED, actor, "rejected",
                               RejectReason.IDENTITY_NOT_VERIFIED.value, "dsar.reject", {})
                else:
                    self._move(conn, row, None, actor, "verification_failed", note,
                               "dsar.verify", changes, decision=Decision.DENY)
                return
            changes = {"subject_id": verified, "verification": result.value,
                       "jurisdiction": jurisdiction, **regime_change}
            self._move(conn, row, RequestState.IDENTITY_VERIFIED, actor, "verified", note,
                       "dsar.verify", changes)
            if limited:
                self._reject_over_limit(conn, row, actor, now)

        self._run(body)
        return self._get(tenant, request_id)

    def extend(self, actor: Actor | None, request_id: str, *, tenant: str, reason: str,
               notified_at: dt.datetime | None = None) -> DSARRequest:
        """Extend the response period (GDPR Art. 12(3): by two further months; CCPA
        §7021(b): by 45 days), once, while the first period runs, with the reason
        and the time the requester was told (default now). The new due day is
        counted from receipt under the same rules.

        Raises:
            InvalidTransition: already extended, closed, the regime allows no
                extension, or the first period has ended.
            InvalidData: a reason that is not a short code.
        """
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "dsar", "dsar.extend", tenant=tenant)
        code = _code(reason, "reason")
        when = self._k.clock.now() if notified_at is None else _aware(notified_at,
                                                                       "notified_at")

        def body(conn: Connection) -> None:
            row = self._lock(conn, tenant, request_id)
            state = RequestState(row["state"])
            check_move(request_id, state, Move.EXTEND)
            if row["extended"]:
                raise InvalidTransition(f"request {request_id} was already extended",
                                        request_id=request_id, state=state.value)
            cp, calendar = self._clock(row["regime"])
            try:
                due = clocks.extended_due(cp, row["right"], row["received_at"],
                                          requested_at=when, calendar=calendar)
            except InvalidData as exc:
                raise InvalidTransition(f"request {request_id} cannot be extended: "
                                        f"{exc.message}", request_id=request_id,
                                        state=state.value) from None
            self._move(conn, row, None, actor, "extended", f"{code}:due:{due.isoformat()}",
                       "dsar.extend", {"extended": True, "due_on": due, "notified_at": when})

        return self._change(tenant, request_id, body)

    def process(self, actor: Actor | None, request_id: str, *, tenant: str,
                out: str | Path | None = None,
                exemptions: Mapping[str, str] | None = None,
                changes: Mapping[str, Mapping[str, Any]] | None = None,
                progress: Progress | None = None) -> DSARRequest:
        """Fulfil a verified request (``dsar.process``), through the services below.

        - access, portability: an export bundle in a new folder under ``out``
          (signed manifest; see :mod:`vault.dsar.bundle`);
        - erasure: records deleted, the data key crypto-shredded, the subject
          marked erased; ``exemptions`` (``collection`` or ``collection.field`` ->
          reason code) and legal holds keep data, and the result is
          ``partially_completed``; a signed certificate without PII (also written
          under ``out`` when given);
        - rectification: ``changes`` (record id -> field -> new value) through the
          data path (never stored with the request);
        - restriction: the subject's processing restricted;
        - objection, opt_out_sale_sharing, limit_sensitive, withdraw_consent:
          recorded in the consent ledger (``details.purposes``, or the profile's);
          ``exemptions`` ``{purpose: "compelling_grounds"}`` keeps an objected
          legitimate-interest purpose;
        - explanation: a statement of the processing rules (under ``out`` when given);
        - automated_decision_review: moves to ``in_progress``; a person reviews the
          decision, then :meth:`complete`.

        ``progress(done, total)`` is called as an export reads the records.

        Raises:
            InvalidTransition: the request is not verified, or has no subject.
            InvalidData: a missing ``out``/``changes``, a bad exemption.
            AccessDenied: ``actor`` may not process, read, delete or shred (audited).
        """
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "dsar", "dsar.process", tenant=tenant)
        current = self._get(tenant, check_identifier(request_id, "request_id"))
        check_move(request_id, current.state, Move.PROCESS)
        if current.subject_id is None:
            raise InvalidTransition(f"request {request_id} has no verified subject",
                                    request_id=request_id, state=current.state.value)
        if current.kind in _STEP_UP:  # an export or an erasure: a second factor first
            self._k.require_step_up(actor, _STEP_UP[current.kind], action="dsar.process",
                                    tenant=tenant, purpose="dsar_fulfilment")
        if current.state is RequestState.IDENTITY_VERIFIED:
            def start(conn: Connection) -> None:
                row = self._lock(conn, tenant, request_id)
                check_move(request_id, RequestState(row["state"]), Move.PROCESS)
                self._move(conn, row, RequestState.IN_PROGRESS, actor, "processing",
                           current.kind.value, "dsar.process", {})
            self._run(start)
            current = self._get(tenant, request_id)
        outcome = self._fulfil.run(actor, current, out=Path(out) if out is not None else None,
                                   exemptions=exemptions, changes=changes, progress=progress)
        if outcome.final is None:
            return self._get(tenant, request_id)
        return self._close(actor, tenant, request_id, outcome)

    def complete(self, actor: Actor | None, request_id: str, *, tenant: str,
                 note: str | None = None) -> DSARRequest:
        """Close a request in progress as completed (after a person's review, e.g. of
        an automated decision, GDPR Art. 22(3)).

        Raises:
            InvalidTransition: the request is not in progress.
        """
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "dsar", "dsar.complete", tenant=tenant)
        text = _note(note)
        return self._close(actor, tenant, check_identifier(request_id, "request_id"),
                           Outcome(RequestState.COMPLETED, {"note": text} if text else {},
                                   "completed"), move=Move.COMPLETE)

    def reject(self, actor: Actor | None, request_id: str, *, tenant: str, reason_code: str,
               note: str | None = None) -> DSARRequest:
        """Refuse a request with a reason code (GDPR Art. 12(4), PIPL Art. 50: the
        requester must be told why) and an optional note (no contact details).

        Raises:
            InvalidTransition: the request is closed.
            InvalidData: an unknown reason code, a note with an address or number.
        """
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "dsar", "dsar.reject", tenant=tenant)
        try:
            code = RejectReason(reason_code)
        except ValueError:
            raise InvalidData("unknown reason_code (see vault.dsar.RejectReason)",
                              field="reason_code") from None
        text = _note(note)
        now = self._k.clock.now()

        def body(conn: Connection) -> None:
            row = self._lock(conn, tenant, request_id)
            check_move(request_id, RequestState(row["state"]), Move.REJECT)
            self._move(conn, row, RequestState.REJECTED, actor, "rejected",
                       code.value + (f": {text}" if text else ""), "dsar.reject",
                       {"reject_reason": code.value, "closed_at": now})

        return self._change(tenant, request_id, body)

    def requester_contact(self, actor: Actor | None, request_id: str, *, tenant: str
                          ) -> dict[str, Any]:
        """The identifiers the requester gave (to answer them), decrypted from the
        request's sealed copy. Audited (``dsar.contact``, the field names only).

        Raises:
            NotFound: no such request, or none were given.
            KeyDestroyed: the request log was purged.
        """
        tenant = check_tenant(tenant)
        self._k.authorise(actor, "dsar", "dsar.read", tenant=tenant)
        check_identifier(request_id, "request_id")
        with self._k.read_only() as conn:
            sealed = conn.execute(select(DSAR_REQUESTS.c.identifiers_sealed).where(
                DSAR_REQUESTS.c.tenant == tenant, DSAR_REQUESTS.c.id == request_id)
            ).scalar_one_or_none()
        if sealed is None:
            raise NotFound(f"request {request_id} holds no requester identifiers")
        key_subject = f"dsar.{request_id}"
        key = self._k.keystore.get_key(tenant, key_subject)
        data: dict[str, Any] = json.loads(self._k.cipher.decrypt(key, bytes(sealed), FieldContext(
            tenant=tenant, collection=_KEY_COLLECTION, record_id=request_id,
            field="identifiers", subject_id=key_subject)))
        self._k.audit("dsar.contact", actor=actor, tenant=tenant, record_ids=(request_id,),
                      fields=tuple(sorted(data.get("identifiers", {}))), purpose=_PURPOSE)
        return data

    def purge(self, actor: Actor | None = None) -> PurgeResult:
        """Apply the request log's retention: delete the export bundles past their
        ``delete_export_after`` day, and every request closed longer ago than its
        regime's ``request_log_retention`` (CCPA 24 months, PIPL 3 years; else the
        ``dsar_request_log_months`` setting), with its history and the key that
        sealed the requester's identifiers. Authorised as ``retention.run``;
        audited (``dsar.purge``, with the counts and the request ids). An actor
        purges its own tenant; the local operator (None) every tenant.
        """
        self._k.authorise(actor, "retention", "retention.run")
        now = self._k.clock.now()
        query = select(
            DSAR_REQUESTS.c.id, DSAR_REQUESTS.c.tenant, DSAR_REQUESTS.c.regime,
            DSAR_REQUESTS.c.closed_at, DSAR_REQUESTS.c.result,
            DSAR_REQUESTS.c.identifiers_sealed,
        ).where(DSAR_REQUESTS.c.state.in_([s.value for s in CLOSED_STATES]))
        if actor is not None:
            query = query.where(DSAR_REQUESTS.c.tenant == actor.tenant)
        with self._k.read_only() as conn:
            rows = conn.execute(query).all()
        exports = purged = 0
        for row in rows:
            result = json.loads(row.result)
            folder, until = result.get("export"), result.get("delete_export_after")
            if folder and until and not result.get("export_deleted") and (
                    now.date() > dt.date.fromisoformat(until)):
                shutil.rmtree(folder, ignore_errors=True)
                exports += 1

                def mark(conn: Connection, row: Any = row, result: dict[str, Any] = result
                         ) -> None:
                    locked = self._lock(conn, row.tenant, row.id)
                    self._move(conn, locked, None, actor, "export_deleted", "export_retention",
                               "dsar.purge", {"result": json.dumps(
                                   {**result, "export_deleted": True}, sort_keys=True)})

                self._run(mark)
            profile = self._k.rules.jurisdictions.profile(row.regime)
            months = (profile.request_log_retention.months if profile.request_log_retention
                      else self._k.settings.dsar_request_log_months)
            closed = row.closed_at
            if closed is None or now < _add_months(closed, months):
                continue
            if row.identifiers_sealed is not None:
                with contextlib.suppress(ShreddingIncomplete, NotFound):
                    self._k.keystore.destroy(row.tenant, f"dsar.{row.id}")

            def remove(conn: Connection, row: Any = row, months: int = months) -> None:
                conn.execute(delete(DSAR_REQUESTS).where(DSAR_REQUESTS.c.id == row.id))
                conn.execute(delete(DSAR_EVENTS).where(DSAR_EVENTS.c.request_id == row.id))
                self._audit(conn, "dsar.purge", actor, row.tenant, row.id, None,
                            f"request_log_retention:{months}m")

            self._run(remove)
            purged += 1
        return PurgeResult(requests=purged, exports=exports)

    # ------------------------------------------------------------------ helpers

    def _close(self, actor: Actor | None, tenant: str, request_id: str, outcome: Outcome,
               *, move: Move = Move.PROCESS) -> DSARRequest:
        now = self._k.clock.now()
        final = outcome.final
        if final is None:  # pragma: no cover - callers close only finished outcomes
            raise AssertionError("an outcome without a final state is not closed")

        def body(conn: Connection) -> None:
            row = self._lock(conn, tenant, request_id)
            state = RequestState(row["state"])
            if state is not RequestState.IN_PROGRESS:
                raise InvalidTransition(f"request {request_id} is {state.value}: it cannot "
                                        f"{move.value}", request_id=request_id,
                                        state=state.value)
            result = {**json.loads(row["result"]), **outcome.result}
            self._move(conn, row, final, actor, final.value, outcome.reason,
                       f"dsar.{move.value}",
                       {"closed_at": now, "result": json.dumps(result, sort_keys=True,
                                                               default=str)})

        return self._change(tenant, request_id, body)

    def _resolve(self, actor: Actor | None, tenant: str, kind: object,
                 profile: JurisdictionProfile, subject: str | None
                 ) -> tuple[RequestKind, str]:
        """(kind, right) of a request named by a kind or by one of the profile's rights."""
        rules = profile.dsar
        if isinstance(kind, str) and rules is not None and kind in rules.kinds:
            return rules.kinds[kind], kind
        request_kind = self._kind(kind)
        right = profile.right_for(request_kind)
        if right is not None:
            return request_kind, right
        if rules is not None and request_kind in rules.courtesy:
            return request_kind, request_kind.value
        self._k.audit("dsar.submit", actor=actor, tenant=tenant, decision=Decision.DENY,
                      reason=f"right_not_granted:{request_kind.value}",
                      subjects=(self._k.pseudonym(tenant, subject),) if subject else ())
        raise RightNotGranted(f"the {profile.name} regime grants no {request_kind.value} "
                              "request", field="kind")

    def _regime_change(self, current: DSARRequest, jurisdiction: str | None
                       ) -> dict[str, Any]:
        """The columns to change when the verified subject's regime is not the one
        the request was received under (no subject was matched then): the regime,
        the profile's right and the due dates, recomputed from receipt. Nothing
        when the regime is the same, the request was extended, or the other regime
        does not grant the kind (the request keeps the regime it was received under)."""
        regime = self._k.rules.jurisdictions.regime_for(jurisdiction)
        if regime == current.regime or current.extended:
            return {}
        profile = self._k.rules.jurisdictions.profile(regime)
        right = profile.right_for(current.kind)
        if right is None and profile.dsar is not None and current.kind in profile.dsar.courtesy:
            right = current.kind.value
        if right is None:
            return {}
        cp, calendar = self._clock(regime)
        due = clocks.respond_by(cp, right, current.received_at, calendar=calendar)
        return {"regime": regime, "right": right, "due_on": due, "first_due_on": due,
                "received_on": clocks.day_of_receipt(cp, current.received_at),
                "acknowledge_by": clocks.acknowledge_by(cp, right, current.received_at,
                                                        calendar=calendar)}

    def _kind(self, kind: object) -> RequestKind:
        if isinstance(kind, str) and kind in RequestKind.__members__.values():
            return RequestKind(kind)
        if isinstance(kind, str):
            for regime in self._k.rules.jurisdictions.regimes:
                rules = self._k.rules.jurisdictions.profile(regime).dsar
                if rules is not None and kind in rules.kinds:
                    return rules.kinds[kind]
        raise InvalidData("unknown kind of request (see vault.dsar.RequestKind)", field="kind")

    @staticmethod
    def _tier(profile: JurisdictionProfile, right: str, kind: RequestKind
              ) -> tuple[str, VerificationTier]:
        rules = profile.dsar
        if rules is None:
            return "default", VerificationTier(points=2)
        for key in (right, kind.value, "default"):
            if key in rules.verification:
                return key, rules.verification[key]
        return "default", rules.tier(right, kind.value)

    def _clock(self, regime: str) -> tuple[clocks.ClockProfile, clocks.HolidayCalendar]:
        cached = self._clocks.get(regime)
        if cached is None:
            cp = clocks.clock_profile(self._k.rules.jurisdictions.profile(regime))
            cached = self._clocks[regime] = (cp, clocks.calendar_for(cp))
        return cached

    def _jurisdiction_of(self, tenant: str, subject_id: str) -> str | None:
        with self._k.read_only() as conn:
            row = conn.execute(select(SUBJECTS.c.jurisdiction).where(
                SUBJECTS.c.tenant == tenant, SUBJECTS.c.subject_id == subject_id)).first()
        return None if row is None else row.jurisdiction

    def _open_duplicate(self, tenant: str, subject_id: str, kind: RequestKind) -> str | None:
        with self._k.read_only() as conn:
            return conn.execute(select(DSAR_REQUESTS.c.id).where(
                DSAR_REQUESTS.c.tenant == tenant, DSAR_REQUESTS.c.subject_id == subject_id,
                DSAR_REQUESTS.c.kind == kind.value,
                DSAR_REQUESTS.c.state.not_in([s.value for s in CLOSED_STATES]),
            ).order_by(DSAR_REQUESTS.c.received_at).limit(1)).scalar_one_or_none()

    def _link(self, actor: Actor | None, request_id: str, channel: str,
              received_at: dt.datetime) -> DSARRequest:
        def body(conn: Connection) -> str:
            row = conn.execute(select(DSAR_REQUESTS).where(
                DSAR_REQUESTS.c.id == request_id)).mappings().one()
            self._move(conn, dict(row), None, actor, "linked",
                       f"duplicate:channel:{channel}:received:{received_at.date().isoformat()}",
                       "dsar.submit", {})
            return str(row["tenant"])

        tenant = self._run(body)
        return self._get(tenant, request_id)

    def _over_limit(self, tenant: str, subject_id: str, profile: JurisdictionProfile,
                    kind: RequestKind, received_at: dt.datetime, *,
                    excluding: str | None = None) -> bool:
        """Whether the subject already made the profile's limit of requests of this
        kind within its window before ``received_at`` (rejected ones do not count)."""
        rules = profile.dsar
        if rules is None:
            return False
        for limit in rules.limits:
            if kind not in limit.kinds:
                continue
            since = received_at - dt.timedelta(days=round(limit.months * 30.44))
            query = select(func.count()).select_from(DSAR_REQUESTS).where(
                DSAR_REQUESTS.c.tenant == tenant, DSAR_REQUESTS.c.subject_id == subject_id,
                DSAR_REQUESTS.c.kind.in_([k.value for k in limit.kinds]),
                DSAR_REQUESTS.c.received_at >= since,
                DSAR_REQUESTS.c.received_at <= received_at,
                DSAR_REQUESTS.c.state != RequestState.REJECTED.value)
            if excluding is not None:
                query = query.where(DSAR_REQUESTS.c.id != excluding)
            with self._k.read_only() as conn:
                if conn.execute(query).scalar_one() >= limit.count:
                    return True
        return False

    def _check_evidence(self, tenant: str, current: DSARRequest, proofs: Sequence[Digest],
                        tier: Verification, declared: bool) -> tuple[str | None, set[str], int]:
        """(the verified subject or None, the fields that matched, how many subjects
        the request's identifiers pointed to besides the verified one: ignored)."""
        with self._k.read_only() as conn:
            by_identifier = matching_subjects(conn, tenant,
                                              self._identifier_digests(current.id))
            pointed = set().union(*by_identifier.values()) if by_identifier else set()
            # A request with a subject is verified against that subject only; one
            # without, against the subjects its identifiers point to.
            candidates = {current.subject_id} if current.subject_id is not None else pointed
            points = {s: points_for(conn, tenant, s, proofs) for s in sorted(candidates)}
        needed = max(tier.points, 1)
        winners = [s for s, p in points.items()
                   if len(p) >= needed and (declared or not tier.declaration)]
        if len(winners) != 1:
            best = max(points.values(), key=len, default=set())
            return None, best, 0
        verified = winners[0]
        return verified, points[verified], len(pointed - {verified})

    def _identifier_digests(self, request_id: str) -> builtins.list[Digest]:
        with self._k.read_only() as conn:
            raw = conn.execute(select(DSAR_REQUESTS.c.identifier_digests).where(
                DSAR_REQUESTS.c.id == request_id)).scalar_one()
        out = []
        for item in json.loads(raw):
            collection, field, name, digest = item.split("|")
            out.append(Digest(collection, field, name, bytes.fromhex(digest)))
        return out

    def _seal_identifiers(self, tenant: str, request_id: str, identifiers: Mapping[str, object],
                          agent: str | None) -> bytes | None:
        """The requester's identifiers, encrypted under a data key of the request
        (``dsar.<id>`` in the key store), so purging the request log is one key
        destruction."""
        if not identifiers:
            return None
        key_subject = f"dsar.{request_id}"
        key = self._k.keystore.create_keys(tenant, [key_subject])[0]
        plaintext = json.dumps({"identifiers": {k: str(v) for k, v in identifiers.items()},
                                "agent": agent}, sort_keys=True).encode()
        return self._k.cipher.encrypt(key, plaintext, FieldContext(
            tenant=tenant, collection=_KEY_COLLECTION, record_id=request_id,
            field="identifiers", subject_id=key_subject))

    def _run(self, body: Callable[[Connection], T]) -> T:
        try:
            for attempt in transaction_attempts():
                with attempt, self._k.engine.begin() as conn:
                    result = body(conn)
        except SQLAlchemyError as exc:
            transaction_failed(exc)
        return result

    def _change(self, tenant: str, request_id: str,
                body: Callable[[Connection], None]) -> DSARRequest:
        check_identifier(request_id, "request_id")
        self._run(body)
        return self._get(tenant, request_id)

    def _lock(self, conn: Connection, tenant: str, request_id: str) -> dict[str, Any]:
        check_identifier(request_id, "request_id")
        row = conn.execute(select(DSAR_REQUESTS).where(
            DSAR_REQUESTS.c.tenant == tenant, DSAR_REQUESTS.c.id == request_id
        ).with_for_update()).mappings().one_or_none()
        if row is None:
            raise NotFound(f"no data-subject request {request_id} in tenant {tenant}")
        return dict(row)

    def _reject_over_limit(self, conn: Connection, row: dict[str, Any], actor: Actor | None,
                           now: dt.datetime) -> None:
        """Reject a request past the regime's request limit (CCPA §1798.130(a)(7))."""
        reason = RejectReason.REQUEST_LIMIT.value
        self._move(conn, row, RequestState.REJECTED, actor, "rejected", reason, "dsar.reject",
                   {"reject_reason": reason, "closed_at": now})

    def _move(self, conn: Connection, row: dict[str, Any], to: RequestState | None,
              actor: Actor | None, event: str, reason: str, action: str,
              changes: Mapping[str, Any], *, decision: Decision = Decision.ALLOW) -> None:
        """Write one move: the row (version-checked), the history entry, the audit entry."""
        values = dict(changes)
        if to is not None:
            values["state"] = to.value
        values["version"] = row["version"] + 1
        done = conn.execute(update(DSAR_REQUESTS).where(
            DSAR_REQUESTS.c.id == row["id"], DSAR_REQUESTS.c.version == row["version"]
        ).values(**values)).rowcount
        if done != 1:
            raise InvalidTransition(f"request {row['id']} changed meanwhile; try again",
                                    request_id=row["id"], state=row["state"])
        before = RequestState(row["state"])
        row.update(values)
        self._history(conn, row["id"], row["tenant"], actor, event, before,
                      to if to is not None else before, reason)
        # The audit entry names the event and its first code (the history keeps the
        # whole reason; a rejection's note stays out of the audit log).
        code = reason.split(": ")[0].split(":")[0]
        self._audit(conn, action, actor, row["tenant"], row["id"], row["subject_id"],
                    f"{event}:{code}", decision=decision)

    def _history(self, conn: Connection, request_id: str, tenant: str, actor: Actor | None,
                 event: str, before: RequestState | None, after: RequestState | None,
                 reason: str | None) -> None:
        conn.execute(insert(DSAR_EVENTS), [{
            "request_id": request_id, "tenant": tenant, "at": self._k.clock.now(),
            "actor": actor_id(actor), "event": event,
            "from_state": before.value if before else None,
            "to_state": after.value if after else None,
            "reason": reason[:255] if reason else None}])

    def _audit(self, conn: Connection, action: str, actor: Actor | None, tenant: str,
               request_id: str, subject_id: str | None, reason: str, *,
               decision: Decision = Decision.ALLOW) -> None:
        self._k.audit_log.append(conn, [self._k.event(
            action, actor=actor, tenant=tenant, decision=decision,
            record_ids=(request_id,), purpose=_PURPOSE,
            subjects=(self._k.pseudonym(tenant, subject_id),) if subject_id else (),
            reason=f"{reason}")])

    def _get(self, tenant: str, request_id: str) -> DSARRequest:
        with self._k.read_only() as conn:
            row = conn.execute(select(DSAR_REQUESTS).where(
                DSAR_REQUESTS.c.tenant == tenant, DSAR_REQUESTS.c.id == request_id)
            ).mappings().one_or_none()
            if row is None:
                raise NotFound(f"no data-subject request {request_id} in tenant {tenant}")
            events = conn.execute(select(DSAR_EVENTS).where(
                DSAR_EVENTS.c.request_id == request_id).order_by(DSAR_EVENTS.c.seq)
            ).mappings().all()
        profile = self._k.rules.jurisdictions.profile(row["regime"])
        kind = RequestKind(row["kind"])
        _, tier = self._tier(profile, row["right"], kind)
        max_failed = profile.dsar.max_failed_verifications if profile.dsar else 3
        matched = 0
        for e in events:
            if e["event"] in ("verified", "verification_failed") and e["reason"] and (
                    e["reason"].startswith("points:")):
                matched = int(e["reason"].split(":")[1].split("/")[0])
        return DSARRequest(
            id=row["id"], tenant=row["tenant"], kind=kind, right=row["right"],
            state=RequestState(row["state"]), regime=row["regime"],
            jurisdiction=row["jurisdiction"], subject_id=row["subject_id"],
            channel=row["channel"], agent=row["agent"], received_at=row["received_at"],
            received_on=row["received_on"], acknowledge_by=row["acknowledge_by"],
            acknowledged_at=row["acknowledged_at"], due_on=row["due_on"],
            first_due_on=row["first_due_on"], extended=bool(row["extended"]),
            notified_at=row["notified_at"],
            verification=Verification(
                tier=row["tier"], points=tier.points, declaration=tier.declaration,
                accept_as_known=tier.accept_as_known,
                result=VerificationResult(row["verification"]), matched=matched,
                failed_attempts=row["failed_attempts"], max_failed=max_failed),
            history=tuple(Transition(
                seq=e["seq"], at=e["at"], actor=e["actor"], event=e["event"],
                from_state=RequestState(e["from_state"]) if e["from_state"] else None,
                to_state=RequestState(e["to_state"]) if e["to_state"] else None,
                reason=e["reason"]) for e in events),
            details=json.loads(row["details"]), result=json.loads(row["result"]),
            reject_reason=row["reject_reason"], closed_at=row["closed_at"],
        )
