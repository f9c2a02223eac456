"""Data-subject requests over HTTP (``v.dsar``): submit, list, get, the moves of a
request (verify, extend, acknowledge, process, complete, reject), the export
bundle's download and the report.

The requester's identifiers, the verification evidence and a rectification's
new values travel only in request bodies, never in a URL. Every move is the
library's (authorised by the policy, written to the request's append-only
history and audited with the caller and the request's audit context); the
gateway adds what only it knows: a second factor before an erasure or an export
(``erase``, ``export``), and the audit entry of a download.

Exports are written by ``process`` to ``<vault home>/dsar-exports/<tenant>/``
on the host that processed the request, and served from there: a bundle that is
not under that folder on this host is not served.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from vault import dsar
from vault.audit.chain import AuditEvent, Decision
from vault.dsar import DSARReport, DSARRequest, RejectReason, RequestKind, RequestState
from vault.errors import AccessDenied
from vault.gateway._auth import Principal
from vault.gateway._core import Caller, Gateway, GatewayDep, page_of
from vault.gateway._models import attributes, dataclass_fields
from vault.gateway._problems import GatewayProblem, problem_docs

__all__ = ["router"]

router = APIRouter(prefix="/v1/dsar", tags=["dsar"])

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$"
_CODE = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"
_KIND = r"^[a-z][a-z_]{0,63}$"
_FIELD = r"^[a-z][a-z0-9_]{0,63}$"
_PURPOSE = "dsar_fulfilment"
_CHUNK = 1 << 20
_EXPORTS = "dsar-exports"
# Paths on the server are not the caller's business: they stay out of the answer.
_SERVER_PATHS = frozenset({"export", "certificate_file", "explanation_file",
                           "certificate_file_error"})

RequestPath = Annotated[str, PathParam(pattern=_ID, max_length=128)]
_EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(3000, 1, 1, tzinfo=dt.UTC)


def _bounded(value: dt.datetime) -> dt.datetime:
    # Far from now, converting to a regime's zone overflows: refuse it as malformed.
    if not _EARLIEST <= value < _LATEST:
        raise ValueError("out of range")
    return value


#: An aware instant between 1970 and 3000.
Instant = Annotated[AwareDatetime, AfterValidator(_bounded)]
_Route = Callable[..., Coroutine[Any, Any, Any]]
Channel = Literal["web", "email", "post", "phone", "in_person", "api", "agent", "gpc"]


# ---------------------------------------------------------------- bodies


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DsarDetails(_Closed):
    """Codes only, never the requester's words."""

    purposes: list[Annotated[str, Field(pattern=_CODE)]] | None = Field(
        default=None, max_length=64)
    collections: list[Annotated[str, Field(pattern=_CODE)]] | None = Field(
        default=None, max_length=64)
    categories_only: bool | None = None
    direct_marketing: bool | None = None


Values = dict[Annotated[str, Field(pattern=_FIELD)], Annotated[str, Field(max_length=512)]]


class DsarSubmit(_Closed):
    """A new request. ``kind`` is a kind (``access``, ``erasure``...) or the name of
    a right in the subject's regime (``know``, ``delete``, ``copy``...).
    ``identifiers`` are what the requester gave (``email``, ``phone``: searchable
    fields), matched through the blind indexes; they widen nothing until verified."""

    kind: str = Field(pattern=_KIND)
    subject_id: str | None = Field(default=None, pattern=_ID)
    identifiers: Values | None = Field(default=None, max_length=16)
    received_at: Instant | None = None
    received_reason: str | None = Field(default=None, pattern=_CODE)
    channel: Channel = "web"
    jurisdiction: str | None = Field(default=None, max_length=16)
    agent: str | None = Field(default=None, pattern=_ID)
    agent_authorisation: str | None = Field(default=None, pattern=_ID)
    details: DsarDetails | None = None


class DsarVerify(_Closed):
    """``evidence`` (field -> value) compared as keyed digests, never stored; or
    ``accept_as_known`` with a reason code where the regime allows it (GDPR Art.
    12(6)). ``declaration``: a reference to a signed declaration."""

    evidence: Values | None = Field(default=None, max_length=16)
    accept_as_known: str | None = Field(default=None, pattern=_CODE)
    declaration: str | None = Field(default=None, pattern=_ID)


class DsarExtend(_Closed):
    reason: str = Field(pattern=_CODE)
    notified_at: Instant | None = None


class DsarAcknowledge(_Closed):
    at: Instant | None = None


class DsarProcess(_Closed):
    """Erasure: ``exemptions`` (``collection`` or ``collection.field`` -> reason code);
    objection: ``{purpose: "compelling_grounds"}``; rectification: ``changes``
    (record id -> field -> new value)."""

    exemptions: dict[Annotated[str, Field(max_length=128)],
                     Annotated[str, Field(pattern=_CODE)]] | None = Field(
        default=None, max_length=256)
    changes: dict[Annotated[str, Field(pattern=_ID)], dict[str, Any]] | None = Field(
        default=None, max_length=1000)


class DsarComplete(_Closed):
    note: str | None = Field(default=None, max_length=200)


class DsarReject(_Closed):
    reason_code: RejectReason
    note: str | None = Field(default=None, max_length=200)


# ---------------------------------------------------------------- answers


# The answers mirror the library's frozen dataclasses: their fields, in their
# order, all required (a code as its string where the schema says so).


class VerificationOut(_Closed):
    __annotations__ = dataclass_fields(dsar.Verification, result=str)


class TransitionOut(_Closed):
    __annotations__ = dataclass_fields(dsar.Transition)


class DsarResultOut(BaseModel):
    """What fulfilment produced (ids, counts, codes; no PII). ``export_available``:
    the bundle can be downloaded (``GET .../export``)."""

    model_config = ConfigDict(extra="allow")

    export_available: bool = False


class DsarRequestOut(_Closed):
    __annotations__ = dataclass_fields(DSARRequest, verification=VerificationOut,
                                       history=list[TransitionOut], details=dict[str, Any],
                                       result=DsarResultOut)


class DsarRequestPage(_Closed):
    items: list[DsarRequestOut]
    next_cursor: str | None = None


class GroupOut(_Closed):
    __annotations__ = {**dataclass_fields(dsar.GroupFigures), "on_time_rate": float | None}


class CcpaMetricOut(_Closed):
    request: str
    received: int
    complied_in_whole_or_part: int
    denied: int
    median_days_to_respond: float | None


class RequestLogOut(_Closed):
    request_id: str
    regime: str
    kind: str
    right: str
    channel: str
    state: str
    received_at: str
    acknowledge_by: str | None
    acknowledged_at: str | None
    due_on: str
    extended: bool
    closed_at: str | None
    on_time: bool | None
    reject_reason: str | None
    subject_matched: bool


class DsarReportOut(_Closed):
    tenant: str
    generated_at: dt.datetime
    on_time_rate: float | None
    groups: list[GroupOut]
    ccpa_metrics: list[CcpaMetricOut]
    log: list[RequestLogOut]


# ---------------------------------------------------------------- helpers


def _result(result: Mapping[str, Any]) -> DsarResultOut:
    shown = {k: v for k, v in result.items() if k not in _SERVER_PATHS}
    available = bool(result.get("export")) and not result.get("export_deleted")
    return DsarResultOut(export_available=available, **shown)


def _out(r: DSARRequest) -> DsarRequestOut:
    return DsarRequestOut.model_validate(
        {**attributes(r), "result": _result(r.result)}, from_attributes=True)


def _report(rep: DSARReport) -> DsarReportOut:
    return DsarReportOut(
        tenant=rep.tenant, generated_at=rep.generated_at, on_time_rate=rep.on_time_rate,
        groups=[GroupOut.model_validate(g, from_attributes=True) for g in rep.groups],
        ccpa_metrics=[CcpaMetricOut.model_validate(m) for m in rep.ccpa_metrics],
        log=[RequestLogOut.model_validate(row) for row in rep.log])


def _export_root(gw: Gateway, tenant: str) -> Path:
    return gw.vault.settings.home / _EXPORTS / tenant


def _may_process(gw: Gateway, who: Principal) -> None:
    """``dsar.process`` for a call that reads through ``dsar.read`` only (the
    download): the policy decides, and the refusal is audited as the library's is."""
    if not gw.vault.policy.check(who.actor, "dsar", "dsar.process", purpose="security"):
        gw.audit_refusal(tenant=who.actor.tenant, actor=who.actor.id, action="dsar.process",
                         reason="access_denied")
        raise AccessDenied("dsar.process denied")


def _bundle(gw: Gateway, request: DSARRequest) -> tuple[Path, list[str]]:
    """The bundle's folder and its files (regular files only), or a problem."""
    folder = request.result.get("export")
    if request.result.get("export_deleted"):
        raise GatewayProblem(410, "export_deleted",
                             "The export bundle was deleted (export retention)")
    missing = GatewayProblem(404, "export_not_found", "The request has no export bundle here")
    if not isinstance(folder, str) or not folder:
        raise missing
    root = _export_root(gw, request.tenant).resolve()
    path = Path(folder).resolve()
    if not path.is_relative_to(root) or not path.is_dir():
        raise missing
    with os.scandir(path) as found:
        entries = sorted(found, key=lambda e: e.name)
    names = []
    for entry in entries:
        if not stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
            raise GatewayProblem(409, "export_damaged", "The export bundle is damaged")
        names.append(entry.name)
    return path, names


class _Sink:
    """Where an archive is written while it streams: collects bytes to hand on."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def _zip_stream(folder: Path, names: list[str]) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            path = folder / name
            info = zipfile.ZipInfo(f"{folder.name}/{name}", date_time=dt.datetime.fromtimestamp(
                path.stat().st_mtime, dt.UTC).timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o600) << 16
            with path.open("rb") as src, archive.open(info, "w", force_zip64=True) as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


def _tar_stream(folder: Path, names: list[str]) -> Iterator[bytes]:
    written = 0
    for name in names:
        path = folder / name
        st = path.stat()
        info = tarfile.TarInfo(f"{folder.name}/{name}")
        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), 0o600
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        yield header
        left = st.st_size
        with path.open("rb") as src:
            while left > 0:
                chunk = src.read(min(_CHUNK, left)) or b"\0" * left
                left -= len(chunk)
                yield chunk
        padding = -st.st_size % tarfile.BLOCKSIZE
        yield b"\0" * padding
        written += len(header) + st.st_size + padding
    end = 2 * tarfile.BLOCKSIZE
    yield b"\0" * (end + (-(written + end) % tarfile.RECORDSIZE))


# ---------------------------------------------------------------- routes


def _move_route(move: str, summary: str) -> Callable[[_Route], _Route]:
    """The route of one move of a request (``POST .../{request_id}/<move>``)."""
    return router.post(f"/requests/{{request_id}}/{move}", response_model=DsarRequestOut,
                       responses=problem_docs(403, 404, 409), summary=summary)


async def _moved(who: Principal, move: Callable[..., DSARRequest], request_id: str,
                 **args: Any) -> DsarRequestOut:
    """The request as ``move`` (a method of ``v.dsar``) leaves it, run for the
    caller in its tenant."""
    return _out(await run_in_threadpool(move, who.actor, request_id,
                                        tenant=who.actor.tenant, **args))


@router.post("/requests", response_model=DsarRequestOut, status_code=status.HTTP_201_CREATED,
             responses=problem_docs(403, 404), summary="Submit a data-subject request")
async def submit_request(gw: GatewayDep, who: Caller, body: DsarSubmit) -> DsarRequestOut:
    """Record a request and compute its due dates by the regime's statutory clocks.
    A duplicate open request of the same kind for the same subject is answered
    instead (the receipt is linked to it, not doubled)."""
    details = body.details.model_dump(exclude_none=True) if body.details else None
    request = await run_in_threadpool(
        gw.vault.dsar.submit, who.actor, body.kind, tenant=who.actor.tenant,
        subject_id=body.subject_id, identifiers=body.identifiers,
        received_at=body.received_at, channel=body.channel, agent=body.agent,
        details=details, jurisdiction=body.jurisdiction,
        received_reason=body.received_reason, agent_authorisation=body.agent_authorisation)
    return _out(request)


@router.get("/requests", response_model=DsarRequestPage, responses=problem_docs(403),
            summary="List data-subject requests")
async def list_requests(
    gw: GatewayDep, who: Caller,
    state: RequestState | None = None,
    kind: Annotated[str | None, Query(pattern=_KIND)] = None,
    overdue: bool = False,
    due_within: Annotated[int | None, Query(ge=0, le=3650, description=(
        "Open requests due within this many days."))] = None,
    acknowledgement_due: bool = False,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> DsarRequestPage:
    """Requests of the caller's tenant, earliest due first, paged."""
    requests = await run_in_threadpool(
        gw.vault.dsar.list, who.actor, tenant=who.actor.tenant,
        state=None if state is None else state.value, overdue=overdue, due_within=due_within,
        kind=kind, acknowledgement_due=acknowledgement_due)
    page, nxt = page_of(gw, requests, limit, cursor)
    return DsarRequestPage(items=[_out(r) for r in page], next_cursor=nxt)


@router.get("/requests/{request_id}", response_model=DsarRequestOut,
            responses=problem_docs(403, 404), summary="Read a data-subject request")
async def get_request(gw: GatewayDep, who: Caller, request_id: RequestPath) -> DsarRequestOut:
    """One request with its history (ids, codes and dates)."""
    request = await run_in_threadpool(gw.vault.dsar.get, who.actor, request_id,
                                      tenant=who.actor.tenant)
    return _out(request)


@_move_route("verify", "Verify the requester")
async def verify_request(gw: GatewayDep, who: Caller, request_id: RequestPath,
                         body: DsarVerify) -> DsarRequestOut:
    """Compare the evidence with the subject's records per the tier (nothing is
    decrypted; a failed attempt is counted, and past the limit the request is
    rejected)."""
    return await _moved(who, gw.vault.dsar.verify, request_id, evidence=body.evidence,
                        accept_as_known=body.accept_as_known, declaration=body.declaration)


@_move_route("extend", "Extend the response period")
async def extend_request(gw: GatewayDep, who: Caller, request_id: RequestPath,
                         body: DsarExtend) -> DsarRequestOut:
    """Extend once, while the first period runs, with a reason code."""
    return await _moved(who, gw.vault.dsar.extend, request_id, reason=body.reason,
                        notified_at=body.notified_at)


@_move_route("acknowledge", "Record the acknowledgement")
async def acknowledge_request(gw: GatewayDep, who: Caller, request_id: RequestPath,
                              body: DsarAcknowledge | None = None) -> DsarRequestOut:
    """Record that receipt was confirmed to the requester (default now)."""
    return await _moved(who, gw.vault.dsar.acknowledge, request_id, at=body.at if body else None)


@_move_route("process", "Fulfil a verified request")
async def process_request(gw: GatewayDep, who: Caller, request_id: RequestPath,
                          body: DsarProcess | None = None) -> DsarRequestOut:
    """Fulfil the request through the data path: an export bundle (access,
    portability: needs a second factor, ``export``), an erasure with its signed
    certificate (needs a second factor, ``erase``), a rectification, a
    restriction, a consent-ledger entry, an explanation."""
    tenant = who.actor.tenant

    def run() -> DSARRequest:
        current = gw.vault.dsar.get(who.actor, request_id, tenant=tenant)
        out: Path | None = None
        if current.kind is RequestKind.ERASURE:
            gw.require_step_up(who, "erase")
        elif current.kind in (RequestKind.ACCESS, RequestKind.PORTABILITY):
            gw.require_step_up(who, "export")
            out = _export_root(gw, tenant)
        elif current.kind is RequestKind.EXPLANATION:
            out = _export_root(gw, tenant)
        return gw.vault.dsar.process(
            who.actor, request_id, tenant=tenant, out=out,
            exemptions=body.exemptions if body else None,
            changes=body.changes if body else None)

    return _out(await run_in_threadpool(run))


@_move_route("complete", "Close a request in progress")
async def complete_request(gw: GatewayDep, who: Caller, request_id: RequestPath,
                           body: DsarComplete | None = None) -> DsarRequestOut:
    """Close as completed after a person's review (e.g. of an automated decision)."""
    return await _moved(who, gw.vault.dsar.complete, request_id,
                        note=body.note if body else None)


@_move_route("reject", "Refuse a request")
async def reject_request(gw: GatewayDep, who: Caller, request_id: RequestPath,
                         body: DsarReject) -> DsarRequestOut:
    """Refuse with a reason code (the requester must be told why) and an optional
    note without contact details."""
    return await _moved(who, gw.vault.dsar.reject, request_id,
                        reason_code=body.reason_code.value, note=body.note)


_ARCHIVES = {"zip": "application/zip", "tar": "application/x-tar"}


@router.get("/requests/{request_id}/export", response_class=StreamingResponse,
            summary="Download the export bundle", responses={
                **problem_docs(403, 404, 409, 410),
                200: {"content": {m: {"schema": {"type": "string", "format": "binary"}}
                                  for m in _ARCHIVES.values()},
                      "description": "The bundle's folder (data files, manifest.json, "
                                     "manifest.sig) as a zip or tar stream."}})
async def download_export(
    gw: GatewayDep, who: Caller, request_id: RequestPath,
    format: Annotated[Literal["zip", "tar"], Query()] = "zip",
) -> Response:
    """The signed export bundle of a processed access or portability request, as one
    archive of its folder (check it with ``vault dsar verify-export``). Needs
    ``dsar.process`` and a second factor (``export``); audited
    (``dsar.export_download``) before the first byte is sent."""
    tenant = who.actor.tenant

    def prepare() -> tuple[Path, list[str]]:
        _may_process(gw, who)
        gw.require_step_up(who, "export")
        current = gw.vault.dsar.get(who.actor, request_id, tenant=tenant)
        folder, names = _bundle(gw, current)
        subjects = (gw.vault.pseudonym(tenant, current.subject_id),) if current.subject_id \
            else ()
        gw.vault.audit_log.write([AuditEvent(
            tenant=tenant, actor=who.actor.id, action="dsar.export_download",
            decision=Decision.ALLOW, record_ids=(current.id,), subjects=subjects,
            purpose=_PURPOSE, reason=f"format:{format}:files:{len(names)}")])
        return folder, names

    folder, names = await run_in_threadpool(prepare)
    stream = _zip_stream(folder, names) if format == "zip" else _tar_stream(folder, names)
    return StreamingResponse(stream, media_type=_ARCHIVES[format], headers={
        "Content-Disposition": f'attachment; filename="{folder.name}.{format}"'})


_REPORT_MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8"}


@router.get("/report", response_model=DsarReportOut, summary="The DSAR report", responses={
    **problem_docs(403),
    200: {"content": {m: {} for m in _REPORT_MEDIA.values()},
          "description": "JSON (figures, CCPA metrics, request log) or CSV."}})
async def dsar_report(
    gw: GatewayDep, who: Caller,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    table: Annotated[Literal["figures", "log"], Query(description=(
        "CSV: the figures by regime and kind, or the request log."))] = "figures",
    since: Instant | None = None, until: Instant | None = None,
) -> Any:
    """On-time rate, median days to close, open and overdue by regime and kind, a
    CCPA §7102-style table and the request log (ids, codes and dates only)."""
    rep = await run_in_threadpool(gw.vault.dsar.report, who.actor, tenant=who.actor.tenant,
                                  since=since, until=until)
    if format == "csv":
        return Response(rep.to_csv() if table == "figures" else rep.log_csv(),
                        media_type=_REPORT_MEDIA["csv"])
    return _report(rep)
