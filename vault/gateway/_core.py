"""What every route shares: the gateway object, the caller, the purpose, step-up,
pagination.

The gateway object is built by :func:`vault.gateway.create_app` and kept on the
app's state: nothing here is module-level state.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, TypeVar

import structlog
from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vault.audit.chain import AuditEvent, Decision
from vault.audit.context import audit_context
from vault.consent.model import ConsentMethod
from vault.errors import VaultError
from vault.facade import Vault
from vault.gateway._auth import AuthFailure, JWTVerifier, Principal, StepUpTokens
from vault.gateway._idempotency import IdempotencyStore
from vault.gateway._limits import RateLimiter
from vault.gateway._problems import GatewayProblem
from vault.gateway._settings import GatewaySettings
from vault.identity import AuthenticationFailed, KeyKind
from vault.types import SecondFactor

__all__ = ["GPC", "Caller", "Gateway", "GatewayDep", "Purpose", "caller", "page_of"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

_bearer = HTTPBearer(auto_error=False,
                     description="An API key (vk_<id>_<secret>) or a JWT of the configured issuer.")
API_KEY_PREFIX = "vk_"
_PERSON = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}")


class Gateway:
    """The vault, the settings and the verifiers one app serves with."""

    def __init__(self, vault: Vault, settings: GatewaySettings) -> None:
        self.vault = vault
        self.settings = settings
        self.jwt = JWTVerifier(settings, vault.clock)
        self.step_up = StepUpTokens(settings, vault.clock)
        self.idempotency = IdempotencyStore(vault.engine)
        self.limits = RateLimiter(vault.engine)

    def limit(self, who: Principal, kind: str, limit: int) -> None:
        """Count a request of ``who`` against ``limit`` per minute (429 past it)."""
        # A JWT's id changes with every token the issuer mints: count per caller.
        key = (f"jwt:{who.actor.tenant}/{who.actor.id}"
               if who.credential_id.startswith("jwt:") else who.credential_id)
        self.limits.hit(key, kind, limit, self.vault.clock.now())

    def honour_gpc(self, who: Principal, signal: str | None,
                   subject_ids: Sequence[str]) -> None:
        """``Sec-GPC: 1`` on a request about subjects: record the opt-out through the
        consent service, once per subject (a subject whose ledger already holds a
        GPC event is left alone). A caller that may not manage consent cannot
        record it: the refusal is the library's (audited) and the request goes on."""
        if signal is None or signal.strip() != "1":
            return
        tenant = who.actor.tenant
        for sid in dict.fromkeys(subject_ids):
            try:
                history = self.vault.consent.history(sid, tenant=tenant, actor=who.actor)
                if any(e.method is ConsentMethod.GPC for e in history):
                    continue
                self.vault.consent.apply_gpc(sid, source="gateway", tenant=tenant,
                                             actor=who.actor)
            except VaultError as exc:
                log.warning("gateway_gpc_not_recorded", code=exc.code)

    def audit_refusal(self, *, tenant: str, actor: str, action: str, reason: str) -> None:
        """Audit a refusal the gateway makes before the library is reached."""
        try:
            self.vault.audit_log.write([AuditEvent(
                tenant=tenant, actor=actor, action=action, decision=Decision.DENY,
                reason=reason)])
        except VaultError:
            # The refusal stands whether or not it could be recorded.
            log.error("gateway_refusal_not_audited", action=action, reason=reason)

    def require_step_up(self, who: Principal, action: str) -> None:
        """Refuse (403, audited) an action that needs a second factor without one.

        For the gateway's own decisions only (a policy check, a DSAR export
        download): where the library decides (reading sensitive fields, erasure,
        exports, key, role and policy administration), the stepped-up actor of
        :func:`caller` carries the factor and the library's rule
        (``VaultSettings.step_up``) applies."""
        if self.settings.needs_step_up(action) and not who.stepped_up:
            self.audit_refusal(tenant=who.actor.tenant, actor=who.actor.id,
                               action=f"gateway.{action}", reason="step_up_required")
            raise GatewayProblem(403, "step_up_required",
                                 "This action needs a verified second factor",
                                 reason="step_up_required")


def _gateway(request: Request) -> Gateway:
    gw = request.app.state.gateway
    assert isinstance(gw, Gateway)
    return gw


GatewayDep = Annotated[Gateway, Depends(_gateway)]


def _unauthenticated(code: str = "unauthenticated") -> GatewayProblem:
    return GatewayProblem(401, code, "Authentication required",
                          headers={"WWW-Authenticate": 'Bearer realm="vault"'})


async def caller(
    gw: GatewayDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    step_up: Annotated[str | None, Header(
        alias="X-Step-Up", description="A step-up token from POST /v1/auth/step-up.")] = None,
    on_behalf_of: Annotated[str | None, Header(
        alias="X-On-Behalf-Of", description="Service credentials: the person the service "
        "acts for (recorded in the audit entries; permissions stay the service's).")] = None,
) -> AsyncIterator[Principal]:
    """The authenticated caller; every audit entry of the request names its
    credential (and the second factor, if proved)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthenticated()
    presented = credentials.credentials
    if presented.startswith(API_KEY_PREFIX):
        try:
            key = await run_in_threadpool(gw.vault.identity.authenticate, presented)
        except AuthenticationFailed:  # audited by the identity service
            raise _unauthenticated() from None
        who = Principal(actor=key.as_actor(), credential_id=f"key:{key.id}",
                        kind="person" if key.kind is KeyKind.PERSON else "service")
    else:
        try:
            who = gw.jwt.verify(presented)
        except AuthFailure as exc:
            await run_in_threadpool(gw.audit_refusal, tenant="*", actor="anonymous",
                                    action="gateway.authenticate", reason=f"jwt:{exc.reason}")
            raise _unauthenticated() from None
    if step_up is not None:
        try:
            who = gw.step_up.apply(who, step_up)
        except AuthFailure as exc:
            await run_in_threadpool(gw.audit_refusal, tenant=who.actor.tenant,
                                    actor=who.actor.id, action="gateway.step_up",
                                    reason=exc.reason)
            raise _unauthenticated("step_up_invalid") from None
        # The library decides what needs a second factor: its actor carries the one
        # the step-up token proves.
        if who.factor is not None and who.factor_at is not None:
            who = dataclasses.replace(who, actor=dataclasses.replace(
                who.actor, second_factor=SecondFactor(who.factor, who.factor_at)))
    await run_in_threadpool(gw.limit, who, "all", gw.settings.rate_limit_per_minute)
    # A service may say for whom it acts: recorded, never a wider permission.
    if on_behalf_of is not None and (who.kind != "service"
                                     or not _PERSON.fullmatch(on_behalf_of)):
        raise GatewayProblem(400, "invalid_on_behalf_of",
                             "X-On-Behalf-Of is for service credentials, with a user id",
                             field="X-On-Behalf-Of")
    with audit_context(credential_id=who.credential_id, factor=who.factor,
                       factor_at=None if who.factor_at is None
                       else who.factor_at.isoformat(), on_behalf_of=on_behalf_of):
        yield who


Caller = Annotated[Principal, Depends(caller)]


async def purpose(
    gw: GatewayDep,
    x_purpose: Annotated[str | None, Header(
        alias="X-Purpose", description="The purpose of use (policies/purposes.toml).")] = None,
) -> str:
    """The purpose the request states; missing or unknown is 400."""
    if not x_purpose:
        raise GatewayProblem(400, "purpose_required", "X-Purpose is required",
                             field="X-Purpose")
    if x_purpose not in gw.vault.purposes.names:
        raise GatewayProblem(400, "unknown_purpose", "Unknown purpose", field="X-Purpose")
    return x_purpose


Purpose = Annotated[str, Depends(purpose)]

GPC = Annotated[str | None, Header(
    alias="Sec-GPC", description="Global Privacy Control: 1 records an opt-out of sale "
    "and sharing for the subject the request is about (once per subject).")]


def _cursor_offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=="))
        offset = raw["o"]
        if isinstance(offset, int) and not isinstance(offset, bool) and 0 <= offset < 2**31:
            return offset
    except (ValueError, KeyError, TypeError):
        pass
    raise GatewayProblem(422, "invalid_request", "The cursor is malformed", field="cursor")


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def page_of(gw: Gateway, items: Sequence[T], limit: int | None,
            cursor: str | None) -> tuple[list[T], str | None]:
    """One page of ``items`` and the cursor of the next (None at the end)."""
    size = min(limit or gw.settings.page_size, gw.settings.max_page_size)
    start = _cursor_offset(cursor)
    end = start + size
    return list(items[start:end]), (_cursor(end) if end < len(items) else None)
