"""Errors as ``application/problem+json`` (RFC 9457), from one table.

Every :class:`~vault.errors.VaultError` code maps to a status here and nowhere
else. A problem body holds a type, a title, the status, a stable ``code``, the
request id and, where the library names one, the field: never the message of
the error (a message may carry a record id the caller did not know), never a
submitted value. Unexpected errors are a bare 500 with the request id.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from vault import errors

__all__ = ["PROBLEM", "GatewayProblem", "Problem", "install_handlers", "problem_docs",
           "problem_response", "status_of"]

log = structlog.get_logger(__name__)

PROBLEM = "application/problem+json"

# The one table. A subclass not listed takes its nearest listed ancestor's row.
_STATUS: dict[type[errors.VaultError], tuple[int, str]] = {
    errors.InvalidData: (422, "The request was refused before anything was written"),
    errors.UnknownCollection: (404, "No such collection"),
    errors.UnknownPurpose: (400, "Unknown purpose"),
    errors.AccessDenied: (403, "Forbidden"),
    errors.StepUpRequired: (403, "This action needs a verified second factor"),
    errors.ConsentRequired: (403, "Consent required"),
    errors.SubjectRestricted: (403, "Processing of the subject is restricted"),
    errors.TransferRefused: (403, "Transfer refused"),
    errors.ApprovalRequired: (202, "The change waits for a second administrator"),
    errors.NotFound: (404, "Not found"),
    errors.VersionConflict: (412, "The record has changed"),
    errors.LegalHoldActive: (409, "A legal hold applies"),
    errors.InvalidTransition: (409, "The request cannot make this move in its state"),
    errors.KeyDestroyed: (410, "The data was erased"),
    errors.DecryptionError: (500, "Internal error"),
    errors.InvalidReceipt: (422, "The receipt does not verify"),
    errors.CryptoError: (500, "Internal error"),
    errors.KeyManagementError: (409, "The key operation was refused"),
    errors.ShreddingIncomplete: (503, "Shredding incomplete"),
    errors.AuditError: (503, "The audit log could not be written"),
    errors.PolicyError: (503, "The policy engine failed"),
    errors.ConfigError: (503, "The vault is misconfigured"),
    errors.VaultError: (500, "Internal error"),
}
# Codes whose row is a 500: the client learns nothing but the request id.
_OPAQUE = frozenset({500})

# The sub-codes of a refusal that are safe to name (they say why, not what exists).
_REASONS = frozenset({"consent_required", "reconsent_required", "opted_out",
                      "separate_consent_required", "search_miss_limit", "self_grant",
                      "other_tenant", "step_up_required", "transfer_refused",
                      "restricted", "localisation_required", "no_role",
                      "purpose_not_allowed", "field_not_allowed", "legal_hold"})


class Problem(BaseModel):
    """An RFC 9457 problem: no input value, no data."""

    type: str
    title: str
    status: int
    code: str
    request_id: str | None = None
    field: str | None = None
    reason: str | None = None
    change_id: str | None = None


class GatewayProblem(Exception):
    """A refusal the gateway makes itself (authentication, purpose, step-up, limits)."""

    def __init__(self, status: int, code: str, title: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None, reason: str | None = None) -> None:
        super().__init__(code)
        self.status, self.code, self.title = status, code, title
        self.field, self.headers, self.reason = field, headers or {}, reason


def status_of(exc: errors.VaultError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500, "Internal error"


def _request_id(request: Request) -> str | None:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else None


def problem_response(request: Request, status: int, code: str, title: str, *,
                     field: str | None = None, reason: str | None = None,
                     change_id: str | None = None,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(type=f"https://vault.example.com/problems/{code}", title=title,
                   status=status, code=code, request_id=_request_id(request),
                   field=field, reason=reason, change_id=change_id)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status,
                        media_type=PROBLEM, headers={"Cache-Control": "no-store",
                                                     **(headers or {})})


async def _vault_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.VaultError)
    status, title = status_of(exc)
    log.info("gateway_refused", code=exc.code, status=status, request_id=_request_id(request))
    if status in _OPAQUE:
        log.error("gateway_internal_error", error_type=type(exc).__name__,
                  request_id=_request_id(request))
        return problem_response(request, 500, "internal_error", "Internal error")
    field = getattr(exc, "field", None)
    reason = getattr(exc, "reason", None)
    # A pending change is named so that a second administrator can approve it.
    change = exc.change_id if isinstance(exc, errors.ApprovalRequired) else None
    return problem_response(request, status, exc.code, title,
                            field=field if isinstance(field, str) else None,
                            reason=reason if reason in _REASONS else None, change_id=change)


async def _gateway_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayProblem)
    log.info("gateway_refused", code=exc.code, status=exc.status,
             request_id=_request_id(request))
    return problem_response(request, exc.status, exc.code, exc.title, field=exc.field,
                            reason=exc.reason, headers=exc.headers)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own body echoes the submitted input: name the place only.
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path",
                                                            "header")]
    field = ".".join(loc)[:128] or None
    return problem_response(request, 422, "invalid_request", "The request is malformed",
                            field=field)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated",
             413: "body_too_large", 415: "unsupported_media_type"}
    code = codes.get(exc.status_code, "http_error")
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Refused")
    return problem_response(request, exc.status_code, code, title,
                            headers=dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # The traceback may quote values: log the type only.
    log.error("gateway_internal_error", error_type=type(exc).__name__,
              request_id=_request_id(request))
    return problem_response(request, 500, "internal_error", "Internal error")


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.VaultError, _vault_error)
    app.add_exception_handler(GatewayProblem, _gateway_problem)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)


def problem_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting the problems an operation can answer."""
    titles = {202: "The change waits for a second administrator (change_id)",
              400: "Missing or unknown purpose, or a malformed header",
              401: "No valid credential", 403: "Forbidden (policy, consent, step-up)",
              404: "Not found",
              409: "Conflict (legal hold, key operation refused, invalid request transition)",
              410: "Erased (crypto-shredded)", 412: "If-Match does not match the version",
              413: "Body too large", 422: "Invalid data (names the field, never the value)",
              428: "If-Match required", 429: "Rate limited",
              500: "Internal error (request id only)", 503: "Audit log, policy engine or "
              "key provider unavailable"}
    base = (400, 401, 413, 422, 429, 500, 503)
    return {s: {"model": Problem, "description": titles.get(s, "Problem"),
                "content": {PROBLEM: {}}} for s in sorted({*base, *statuses})}
