"""The app factory: :func:`create_app` builds a FastAPI app from a ``Vault`` and
:class:`GatewaySettings`; nothing is module-level.

Around every request (one pure ASGI middleware, so that the request's context
variables reach the routes): a request id (``X-Request-ID``, also the audit
entries' correlation id), a bound on the body, security headers (``no-store``,
HSTS when serving TLS) and an access log line that names the route template,
never a path's values or a query string.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from vault.audit.context import correlation_id, new_request_id
from vault.facade import Vault
from vault.gateway._admin import router as admin_router
from vault.gateway._compliance import router as compliance_router
from vault.gateway._core import Gateway
from vault.gateway._dsar import router as dsar_router
from vault.gateway._models import Health
from vault.gateway._problems import PROBLEM, install_handlers
from vault.gateway._records import router as records_router
from vault.gateway._settings import GatewaySettings

__all__ = ["create_app"]

log = structlog.get_logger("vault.gateway.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _Envelope:
    """Request id, body bound, security headers and the access log of every request."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        rid = given if _REQUEST_ID.fullmatch(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status_seen: list[int] = []
        path: str = scope.get("path", "")
        docs = path in ("/docs", "/redoc") or path.startswith("/docs/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
                extra = [(b"x-request-id", rid.encode()),
                         (b"x-content-type-options", b"nosniff"),
                         (b"referrer-policy", b"no-referrer"),
                         (b"x-frame-options", b"DENY")]
                extra.append((b"cache-control", b"no-store"))
                if not docs:
                    extra.append((b"content-security-policy",
                                  b"default-src 'none'; frame-ancestors 'none'"))
                if self.settings.hsts:
                    extra.append((b"strict-transport-security",
                                  b"max-age=31536000; includeSubDomains"))
                present = {bytes(k).lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in extra if k not in present)]
            await send(message)

        try:
            with correlation_id(rid):
                if scope.get("method") in _BODY_METHODS:
                    body = await self._bounded_body(headers, receive)
                    if body is None:
                        await self._too_large(rid, scope, send_with_headers)
                        return
                    receive = _replay(body, receive)
                await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            # Not re-raised: the server's own error log would print the message,
            # which may quote a value. The type and the request id are enough.
            log.error("gateway_internal_error", error_type=type(exc).__name__,
                      request_id=rid)
            if not status_seen:
                await _problem(500, "internal_error", "Internal error", rid, scope,
                               send_with_headers)
        finally:
            route = scope.get("route")
            log.info("http_request", method=scope.get("method"),
                     route=getattr(route, "path", None) or "-",
                     status=status_seen[0] if status_seen else 0, request_id=rid,
                     ms=round((time.perf_counter() - started) * 1000, 1))

    async def _bounded_body(self, headers: dict[str, str], receive: Receive) -> bytes | None:
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, rid: str, scope: Scope, send: Send) -> None:
        await _problem(413, "body_too_large", "The request body is too large", rid, scope,
                       send)


async def _problem(status: int, code: str, title: str, rid: str, scope: Scope,
                   send: Send) -> None:
    body = JSONResponse({"type": f"https://vault.example.com/problems/{code}",
                         "title": title, "status": status, "code": code, "request_id": rid},
                        status_code=status, media_type=PROBLEM)
    await body(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def create_app(vault: Vault, settings: GatewaySettings | None = None) -> FastAPI:
    """Build the gateway's app over an open ``vault``.

    The caller keeps the vault's life cycle (open it before, close it after).

    Raises:
        ConfigError: the gateway settings (e.g. the JWKS file) are unusable.
    """
    settings = settings or GatewaySettings()
    gateway = Gateway(vault, settings)
    app = FastAPI(
        title="Vault gateway",
        version="1",
        description=(
            "Encrypted, access-controlled, audited customer data over HTTP. Every data "
            "call is authenticated (Bearer JWT), states its purpose (`X-Purpose`) and is "
            "audited before data is returned. Errors are `application/problem+json` "
            "(RFC 9457) and never echo a submitted value."),
        openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
    )
    app.state.gateway = gateway
    install_handlers(app)
    app.include_router(records_router)
    app.include_router(compliance_router)
    app.include_router(dsar_router)
    app.include_router(admin_router)

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["health"],
             responses={503: {"model": Health, "description": "Not ready"}})
    async def readyz() -> JSONResponse:
        """The databases, the key provider and the audit log can be reached."""
        checks = await run_in_threadpool(_readiness, vault)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(Health(status="ok" if ok else "unavailable",
                                   checks=checks).model_dump(), status_code=200 if ok else 503)

    app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                       allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                       allow_headers=["Authorization", "Content-Type", "X-Purpose",
                                      "X-Step-Up", "Idempotency-Key", "If-Match",
                                      "X-Request-ID"],
                       expose_headers=["ETag", "X-Request-ID", "Retry-After"])
    app.add_middleware(_Envelope, settings=settings)
    return app


def _select_one(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _readiness(vault: Vault) -> dict[str, str]:
    checks: dict[str, str] = {}
    for name, check in (("database", lambda: _select_one(vault.engine)),
                        ("keystore", lambda: _select_one(vault.keystore.engine)),
                        ("key_provider", lambda: vault.keys.status()),
                        ("audit", lambda: vault.audit_log.count())):
        try:
            check()
            checks[name] = "ok"
        except Exception:  # any failure means not ready; the reason stays in the logs
            log.warning("readyz_failed", check=name)
            checks[name] = "unavailable"
    return checks
