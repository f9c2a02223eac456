"""Records of a collection: create (idempotent), batch create and get, read with
an ETag, PATCH and DELETE with If-Match, and search with the criteria in the
body (no value of a customer ever sits in a URL or an access log)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.concurrency import run_in_threadpool

from vault.errors import InvalidData
from vault.gateway._auth import Principal
from vault.gateway._core import GPC, Caller, Gateway, GatewayDep, Purpose, page_of
from vault.gateway._models import (
    BatchCreate,
    BatchCreated,
    BatchGet,
    Created,
    CreateRecord,
    PatchRecord,
    RecordOut,
    RecordPage,
    SearchRecords,
)
from vault.gateway._problems import GatewayProblem, problem_docs
from vault.types import Record

__all__ = ["router"]

router = APIRouter(prefix="/v1/collections/{collection}/records", tags=["records"])

CollectionPath = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$", max_length=64)]
RecordPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$",
                                 max_length=128)]
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_ETAG = re.compile(r'^(?:W/)?"(\d{1,10})"$')


def _out(record: Record) -> RecordOut:
    # The library leaves out the sensitive fields of a caller without a second
    # factor and names them (asked for by name, it refuses: 403 step_up_required).
    return RecordOut(id=record.id, subject_id=record.subject_id, collection=record.collection,
                     data=dict(record.data), masked=sorted(record.masked),
                     withheld=sorted(record.withheld), version=record.version,
                     step_up_fields=sorted(record.step_up))


def _if_match(value: str | None) -> int | None:
    if value is None or value.strip() == "*":
        return None
    found = _ETAG.match(value.strip())
    if found is None:
        raise GatewayProblem(400, "invalid_if_match", "If-Match must be an ETag of this API",
                             field="If-Match")
    return int(found.group(1))


def _new_subject_id() -> str:
    return uuid.uuid4().hex


def _etag(version: int) -> str:
    return f'"{version}"'


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Created,
             responses=problem_docs(400, 403, 404, 409, 410, 413, 429),
             summary="Create a record")
async def create_record(
    gw: GatewayDep, who: Caller, purpose: Purpose, collection: CollectionPath,
    body: CreateRecord, response: Response,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key",
        description="Retrying with the same key and body answers the first create.")] = None,
    sec_gpc: GPC = None,
) -> Created:
    """Store a new record, every field encrypted under its subject's data key."""
    def put() -> Created:
        # A new subject gets its id here, so that the answer can name it.
        subject = body.subject_id or _new_subject_id()
        rid = gw.vault.put(who.actor, collection, body.data, purpose=purpose,
                           subject_id=subject, jurisdiction=body.jurisdiction)
        gw.honour_gpc(who, sec_gpc, [subject])
        return Created(id=rid, subject_id=subject)

    if idempotency_key is None:
        return await run_in_threadpool(put)
    if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise GatewayProblem(400, "invalid_idempotency_key", "Idempotency-Key is malformed",
                             field="Idempotency-Key")
    return await run_in_threadpool(_idempotent, gw, who, collection, purpose, body,
                                   idempotency_key, put, response)


def _idempotent(gw: Gateway, who: Principal, collection: str, purpose: str,
                body: CreateRecord, key: str, put: Any, response: Response) -> Created:
    tenant, actor = who.actor.tenant, who.actor.id
    canonical = json.dumps([collection, purpose, body.model_dump(mode="json")],
                           sort_keys=True, separators=(",", ":"), default=str)
    # Keyed (the vault's pseudonym HMAC), so the stored digest is no dictionary
    # for guessing a body.
    digest = gw.vault.pseudonym(tenant, hashlib.sha256(canonical.encode()).hexdigest())
    seen = gw.idempotency.claim(tenant, actor, key, digest[:64], gw.vault.clock.now())
    if seen is not None:
        if seen.request_digest != digest[:64]:
            raise GatewayProblem(422, "idempotency_key_reused",
                                 "The Idempotency-Key was used with another request",
                                 field="Idempotency-Key")
        if seen.status == 0:
            raise GatewayProblem(409, "idempotency_in_progress",
                                 "A request with this Idempotency-Key is in progress",
                                 headers={"Retry-After": "1"})
        response.headers["Idempotent-Replayed"] = "true"
        return Created.model_validate(seen.response)
    try:
        created: Created = put()
    except BaseException:
        gw.idempotency.release(tenant, actor, key)
        raise
    gw.idempotency.complete(tenant, actor, key, 201, created.model_dump())
    return created


@router.post("/batch", status_code=status.HTTP_201_CREATED, response_model=BatchCreated,
             responses=problem_docs(400, 403, 404, 410, 413), summary="Create many records")
async def create_records(gw: GatewayDep, who: Caller, purpose: Purpose,
                         collection: CollectionPath, body: BatchCreate) -> BatchCreated:
    """Store many records in one transaction: every one or none."""
    if len(body.items) > gw.settings.max_batch:
        raise GatewayProblem(422, "batch_too_large", "Too many items", field="items")

    def put() -> BatchCreated:
        subjects = [i.subject_id or _new_subject_id() for i in body.items]
        ids = gw.vault.put_many(who.actor, collection, [i.data for i in body.items],
                                purpose=purpose, subject_ids=subjects,
                                jurisdiction=body.jurisdiction)
        return BatchCreated(items=[Created(id=rid, subject_id=sid)
                                   for rid, sid in zip(ids, subjects, strict=True)])

    return await run_in_threadpool(put)


@router.post("/batch-get", response_model=list[RecordOut],
             responses=problem_docs(400, 403, 404, 410), summary="Read many records")
async def get_records(gw: GatewayDep, who: Caller, purpose: Purpose,
                      collection: CollectionPath, body: BatchGet) -> list[RecordOut]:
    """Read many records in one transaction (404 if any is unknown)."""
    if len(body.ids) > gw.settings.max_batch:
        raise GatewayProblem(422, "batch_too_large", "Too many ids", field="ids")

    def read() -> list[RecordOut]:
        records = gw.vault.get_many(who.actor, collection, body.ids, purpose=purpose,
                                    fields=body.fields)
        return [_out(r) for r in records]

    return await run_in_threadpool(read)


@router.post("/search", response_model=RecordPage, responses=problem_docs(400, 403, 404),
             summary="Find records by searchable fields")
async def search_records(gw: GatewayDep, who: Caller, purpose: Purpose,
                         collection: CollectionPath, body: SearchRecords) -> RecordPage:
    """Equality search through blind indexes; the criteria are in the body so that
    no value sits in a URL. Results are paged (``limit``, ``cursor``)."""
    def find() -> RecordPage:
        gw.limit(who, "search", gw.settings.search_rate_limit_per_minute)
        try:
            found = gw.vault.find(who.actor, collection, purpose=purpose, **body.criteria)
        except TypeError:  # a criterion named like a keyword of find
            raise InvalidData("criteria name unknown fields", field="criteria") from None
        page, cursor = page_of(gw, found, body.limit, body.cursor)
        return RecordPage(items=[_out(r) for r in page], next_cursor=cursor)

    return await run_in_threadpool(find)


@router.get("/{record_id}", response_model=RecordOut,
            responses=problem_docs(400, 403, 404, 410), summary="Read a record")
async def get_record(
    gw: GatewayDep, who: Caller, purpose: Purpose, collection: CollectionPath,
    record_id: RecordPath, response: Response,
    fields: Annotated[list[str] | None, Query(description="Only these fields.")] = None,
    sec_gpc: GPC = None,
) -> RecordOut:
    """Read one record; ``ETag`` is its version (for If-Match)."""
    def read() -> RecordOut:
        record = gw.vault.get(who.actor, collection, record_id, purpose=purpose, fields=fields)
        gw.honour_gpc(who, sec_gpc, [record.subject_id])
        return _out(record)

    out = await run_in_threadpool(read)
    response.headers["ETag"] = _etag(out.version)
    return out


@router.patch("/{record_id}", status_code=status.HTTP_204_NO_CONTENT,
              responses=problem_docs(400, 403, 404, 410, 412), summary="Change a record")
async def patch_record(
    gw: GatewayDep, who: Caller, purpose: Purpose, collection: CollectionPath,
    record_id: RecordPath, body: PatchRecord,
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> Response:
    """Change some fields (null removes an optional one); with ``If-Match`` only if
    the record is still at that version (else 412)."""
    version = _if_match(if_match)
    await run_in_threadpool(gw.vault.update, who.actor, collection, record_id, body.data,
                            purpose=purpose, if_version=version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/{record_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=problem_docs(400, 403, 404, 409, 412), summary="Delete a record")
async def delete_record(
    gw: GatewayDep, who: Caller, purpose: Purpose, collection: CollectionPath,
    record_id: RecordPath,
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> Response:
    """Delete a record (an erasure: needs a second factor by default)."""
    version = _if_match(if_match)

    # An erasure: the library asks for a second factor (by default).
    await run_in_threadpool(gw.vault.delete, who.actor, collection, record_id,
                            purpose=purpose, if_version=version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
