"""Consent, subjects and the audit trail over HTTP (data-subject requests are in
:mod:`vault.gateway._dsar`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from vault.audit.report import ReportView, render
from vault.consent.model import ConsentEvent, ConsentState
from vault.gateway._auth import Principal
from vault.gateway._core import GPC, Caller, GatewayDep, page_of
from vault.gateway._models import (
    CheckpointOut,
    ConsentEventOut,
    ConsentEventPage,
    ConsentGrant,
    ConsentStateOut,
    ConsentWithdraw,
    JurisdictionIn,
    ReceiptOut,
    RestrictionIn,
    SubjectOut,
    VerifyOut,
)
from vault.gateway._problems import GatewayProblem, problem_docs
from vault.subjects import SubjectInfo

__all__ = ["router"]

router = APIRouter(prefix="/v1")

SubjectPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$",
                                  max_length=128)]

_Route = Callable[..., Coroutine[Any, Any, Any]]


def _event(e: ConsentEvent) -> ConsentEventOut:
    return ConsentEventOut(
        event_id=e.event_id, subject_id=e.subject_id, purpose=e.purpose, scope=str(e.scope),
        kind=str(e.kind), regime=e.regime, method=str(e.method), notice_id=e.notice_id,
        notice_version=e.notice_version, occurred_at=e.occurred_at, expires_at=e.expires_at,
        source=e.source, conflict=e.conflict)


def _state(s: ConsentState, now: dt.datetime) -> ConsentStateOut:
    return ConsentStateOut(
        purpose=s.purpose, scope=str(s.scope), status=str(s.status_at(now)), regime=s.regime,
        notice_id=s.notice_id, notice_version=s.notice_version, expires_at=s.expires_at,
        event_id=s.event_id, updated_at=s.updated_at)


def _subject(info: SubjectInfo) -> SubjectOut:
    return SubjectOut(subject_id=info.subject_id, jurisdiction=info.jurisdiction,
                      regime=info.regime, restricted=info.restricted,
                      restricted_at=info.restricted_at,
                      restriction_reason=info.restriction_reason)


# ---------------------------------------------------------------- consent


def _ledger_route(path: str) -> Callable[[_Route], _Route]:
    """The route of a new ledger event (``POST /subjects/{subject_id}/consents...``)."""
    return router.post(f"/subjects/{{subject_id}}/consents{path}",
                       response_model=ConsentEventOut, status_code=201, tags=["consent"],
                       responses=problem_docs(403, 404))


async def _append(who: Principal, append: Callable[..., ConsentEvent], subject_id: str,
                  body: ConsentGrant | ConsentWithdraw) -> ConsentEventOut:
    """The event ``append`` (``grant`` or ``withdraw`` of ``v.consent``) records,
    the body's fields its arguments, for the caller in its tenant."""
    args = dict(body)
    event = await run_in_threadpool(append, subject_id, args.pop("purpose"),
                                    tenant=who.actor.tenant, actor=who.actor, **args)
    return _event(event)


@_ledger_route("")
async def grant_consent(gw: GatewayDep, who: Caller, subject_id: SubjectPath,
                        body: ConsentGrant) -> ConsentEventOut:
    """Record that the subject consents to a purpose, under a registered notice."""
    return await _append(who, gw.vault.consent.grant, subject_id, body)


@_ledger_route("/withdraw")
async def withdraw_consent(gw: GatewayDep, who: Caller, subject_id: SubjectPath,
                           body: ConsentWithdraw) -> ConsentEventOut:
    """Record a withdrawal (as easy as granting: no notice needed)."""
    return await _append(who, gw.vault.consent.withdraw, subject_id, body)


@router.get("/subjects/{subject_id}/consents", response_model=list[ConsentStateOut],
            tags=["consent"], responses=problem_docs(403, 404))
async def consent_state(gw: GatewayDep, who: Caller,
                        subject_id: SubjectPath) -> list[ConsentStateOut]:
    """The current state of every (purpose, scope) the subject has events for."""
    states = await run_in_threadpool(gw.vault.consent.state, subject_id,
                                     tenant=who.actor.tenant, actor=who.actor)
    now = gw.vault.clock.now()
    return [_state(s, now) for s in states]


@router.get("/subjects/{subject_id}/consents/history", response_model=ConsentEventPage,
            tags=["consent"], responses=problem_docs(403, 404))
async def consent_history(
    gw: GatewayDep, who: Caller, subject_id: SubjectPath,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> ConsentEventPage:
    """Every ledger event of the subject, oldest first, paged."""
    events = await run_in_threadpool(gw.vault.consent.history, subject_id,
                                     tenant=who.actor.tenant, actor=who.actor)
    page, nxt = page_of(gw, events, limit, cursor)
    return ConsentEventPage(items=[_event(e) for e in page], next_cursor=nxt)


@router.get("/consents/{event_id}/receipt", tags=["consent"], response_model=ReceiptOut,
            response_model_by_alias=True, responses=problem_docs(403, 404))
async def consent_receipt(gw: GatewayDep, who: Caller, event_id: SubjectPath) -> ReceiptOut:
    """The signed receipt (Ed25519) of a consent event."""
    issued = await run_in_threadpool(gw.vault.consent.receipt, event_id,
                                     tenant=who.actor.tenant, actor=who.actor)
    return ReceiptOut.model_validate(issued)


# ---------------------------------------------------------------- subjects


@router.get("/subjects/{subject_id}", response_model=SubjectOut, tags=["subjects"],
            responses=problem_docs(403, 404))
async def get_subject(gw: GatewayDep, who: Caller, subject_id: SubjectPath,
                      sec_gpc: GPC = None) -> SubjectOut:
    """A subject's jurisdiction, regime and restriction (ids only)."""
    def run() -> SubjectOut:
        info = gw.vault.subjects.get(subject_id, tenant=who.actor.tenant, actor=who.actor)
        gw.honour_gpc(who, sec_gpc, [subject_id])
        return _subject(info)

    return await run_in_threadpool(run)


@router.put("/subjects/{subject_id}/jurisdiction", response_model=SubjectOut,
            tags=["subjects"], responses=problem_docs(403, 404))
async def set_jurisdiction(gw: GatewayDep, who: Caller, subject_id: SubjectPath,
                           body: JurisdictionIn) -> SubjectOut:
    """Change the subject's jurisdiction (audited with the old and new regime)."""
    info = await run_in_threadpool(gw.vault.subjects.set_jurisdiction, subject_id,
                                   body.jurisdiction, tenant=who.actor.tenant,
                                   actor=who.actor)
    return _subject(info)


@router.put("/subjects/{subject_id}/restriction", response_model=SubjectOut,
            tags=["subjects"], responses=problem_docs(403, 404))
async def restrict_subject(gw: GatewayDep, who: Caller, subject_id: SubjectPath,
                           body: RestrictionIn) -> SubjectOut:
    """Restrict processing of the subject (GDPR Art. 18, PIPL Art. 44)."""
    info = await run_in_threadpool(gw.vault.subjects.restrict, subject_id,
                                   tenant=who.actor.tenant, reason=body.reason,
                                   actor=who.actor)
    return _subject(info)


@router.delete("/subjects/{subject_id}/restriction", response_model=SubjectOut,
               tags=["subjects"], responses=problem_docs(403, 404))
async def lift_restriction(gw: GatewayDep, who: Caller, subject_id: SubjectPath) -> SubjectOut:
    """Lift a restriction."""
    info = await run_in_threadpool(gw.vault.subjects.lift_restriction, subject_id,
                                   tenant=who.actor.tenant, actor=who.actor)
    return _subject(info)


# ---------------------------------------------------------------- audit


@router.post("/audit/verify", response_model=VerifyOut, tags=["audit"],
             responses=problem_docs(403))
async def verify_audit(gw: GatewayDep, who: Caller) -> VerifyOut:
    """Recompute every hash chain (a compliance officer's check)."""
    report = await run_in_threadpool(gw.vault.audit.verify, actor=who.actor, workers=1)
    return VerifyOut(ok=report.ok, entries=report.entries, chains=report.chains,
                     reason=None if report.reason is None else str(report.reason),
                     first_bad_seq=report.first_bad_seq, findings=len(report.findings))


_MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8",
          "html": "text/html; charset=utf-8"}


@router.get("/audit/reports/{view}", tags=["audit"], responses={
    **problem_docs(403), 200: {"content": {m: {} for m in _MEDIA.values()},
                               "description": "The report in the format asked for."}})
async def audit_report(
    gw: GatewayDep, who: Caller, view: ReportView,
    format: Annotated[Literal["json", "csv", "html"], Query()] = "json",
    since: dt.datetime | None = None, until: dt.datetime | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    decision: Annotated[Literal["allow", "deny", "error"] | None, Query()] = None,
    actor_id: Annotated[str | None, Query(max_length=128)] = None,
    collection: Annotated[str | None, Query(max_length=64)] = None,
    subject: Annotated[str | None, Query(max_length=128, description=(
        "A subject id (turned into its pseudonym; the subject_access view)."))] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> Response:
    """An audit report as JSON, CSV or a self-contained HTML page; confined to the
    caller's tenant unless the policy grants ``audit.read_all``."""
    given: dict[str, Any] = {"since": since, "until": until, "action": action,
                             "decision": decision, "actor_id": actor_id,
                             "collection": collection, "subject": subject}
    filters = {k: v for k, v in given.items() if v is not None}

    def run() -> str:
        rep = gw.vault.audit.report(view, actor=who.actor, output=format,
                                    limit=limit or 10_000, **filters)
        return render(rep, format)

    text = await run_in_threadpool(run)
    return Response(text, media_type=_MEDIA[format])


@router.post("/audit/checkpoints", response_model=CheckpointOut, status_code=201,
             tags=["audit"], responses=problem_docs(403))
async def audit_checkpoint(gw: GatewayDep, who: Caller) -> CheckpointOut:
    """Verify the log, then write a signed checkpoint to the configured folder."""
    folder = gw.settings.checkpoint_dir
    if folder is None:
        raise GatewayProblem(503, "checkpoints_not_configured",
                             "VAULT_GATEWAY_CHECKPOINT_DIR is not set")
    path = await run_in_threadpool(gw.vault.audit.checkpoint, folder, actor=who.actor)
    return CheckpointOut(name=path.name)
