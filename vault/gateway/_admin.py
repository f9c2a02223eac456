"""Administration over HTTP: roles, policy checks, key status and rotation, and
step-up. Role, policy and key administration need a second factor by default."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool

from vault.audit.chain import AuditEvent, Decision
from vault.errors import AccessDenied, NotFound
from vault.gateway._auth import AuthFailure, Principal
from vault.gateway._core import Caller, Gateway, GatewayDep, page_of
from vault.gateway._models import (
    ApiKeyOut,
    KeyStatusOut,
    PolicyCheckIn,
    PolicyCheckOut,
    RoleAssignmentIn,
    RoleAssignmentOut,
    RoleAssignmentPage,
    RoleChangeOut,
    RotationOut,
    StepUpIn,
    StepUpOut,
)
from vault.gateway._problems import GatewayProblem, problem_docs
from vault.identity import ApiKey, AuthenticationFailed
from vault.types import Actor

__all__ = ["router"]

router = APIRouter(prefix="/v1")

# Administrative actions hold for any purpose; the policy names this one for them.
_ADMIN_PURPOSE = "security"
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$"


def _authorise(gw: Gateway, who: Principal, obj: str, action: str) -> None:
    """For the library calls that take no actor (key status, role lists): the
    policy decides here, and the refusal is audited as the library's would be."""
    if not gw.vault.policy.check(who.actor, obj, action, purpose=_ADMIN_PURPOSE):
        gw.audit_refusal(tenant=who.actor.tenant, actor=who.actor.id, action=action,
                         reason="access_denied")
        raise AccessDenied(f"{action} denied")


@router.post("/auth/step-up", response_model=StepUpOut, tags=["auth"],
             responses=problem_docs(403))
async def step_up(gw: GatewayDep, who: Caller, body: StepUpIn) -> StepUpOut:
    """Exchange a proved second factor (a TOTP code of a person API key, or a JWT
    whose ``amr`` names one, with a recent ``auth_time``) for a short-lived step-up
    token, sent as ``X-Step-Up``. Service credentials never step up; a TOTP code
    is accepted once."""
    if not gw.step_up.enabled:
        raise GatewayProblem(503, "step_up_not_configured", "Step-up is not configured")
    refused = GatewayProblem(403, "step_up_refused", "No second factor proved",
                             reason="step_up_required")
    if body.method == "totp":
        if who.kind != "person" or not who.credential_id.startswith("key:") or not body.code:
            await run_in_threadpool(gw.audit_refusal, tenant=who.actor.tenant,
                                    actor=who.actor.id, action="gateway.step_up",
                                    reason="step_up_not_a_person_key")
            raise refused
        try:
            await run_in_threadpool(gw.vault.identity.verify_totp,
                                    who.credential_id.removeprefix("key:"), body.code)
        except AuthenticationFailed:  # audited by the identity service
            raise refused from None
        factor = "totp"
    else:
        try:
            factor = gw.step_up.factor_of_jwt(who)
        except AuthFailure as exc:
            await run_in_threadpool(gw.audit_refusal, tenant=who.actor.tenant,
                                    actor=who.actor.id, action="gateway.step_up",
                                    reason=exc.reason)
            raise refused from None
    token, expires = gw.step_up.issue(who, factor)
    await run_in_threadpool(gw.vault.audit_log.write, [_step_up_event(who, factor)])
    return StepUpOut(step_up_token=token, expires_at=expires, factor=factor)


def _step_up_event(who: Principal, factor: str) -> AuditEvent:
    return AuditEvent(tenant=who.actor.tenant, actor=who.actor.id, action="gateway.step_up",
                      decision=Decision.ALLOW, reason=f"factor:{factor}")


# ---------------------------------------------------------------- roles


@router.get("/admin/roles", response_model=RoleAssignmentPage, tags=["admin"],
            responses=problem_docs(403))
async def list_roles(
    gw: GatewayDep, who: Caller,
    user: Annotated[str | None, Query(pattern=_ID)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> RoleAssignmentPage:
    """Role assignments of the caller's tenant."""
    def run() -> list[RoleAssignmentOut]:
        _authorise(gw, who, "policy", "policy.admin")
        return [RoleAssignmentOut(user=a.user, role=a.role, tenant=a.tenant)
                for a in gw.vault.roles.list(tenant=who.actor.tenant, user=user)]

    items = await run_in_threadpool(run)
    page, nxt = page_of(gw, items, limit, cursor)
    return RoleAssignmentPage(items=page, next_cursor=nxt)


@router.post("/admin/roles", response_model=RoleChangeOut, tags=["admin"],
             responses=problem_docs(202, 403))
async def assign_role(gw: GatewayDep, who: Caller, body: RoleAssignmentIn) -> RoleChangeOut:
    """Give a user a role in the caller's tenant (needs a second factor)."""
    def run() -> bool:
        return gw.vault.roles.assign(body.user, body.role, tenant=who.actor.tenant,
                                     actor=who.actor)

    return RoleChangeOut(changed=await run_in_threadpool(run))


@router.delete("/admin/roles/{user}/{role}", response_model=RoleChangeOut, tags=["admin"],
               responses=problem_docs(403))
async def revoke_role(gw: GatewayDep, who: Caller,
                      user: Annotated[str, Path(pattern=_ID)],
                      role: Annotated[str, Path(max_length=64)]) -> RoleChangeOut:
    """Take a role away from a user in the caller's tenant (needs a second factor)."""
    def run() -> bool:
        return gw.vault.roles.revoke(user, role, tenant=who.actor.tenant, actor=who.actor)

    return RoleChangeOut(changed=await run_in_threadpool(run))


# ---------------------------------------------------------------- API keys


def _api_key(k: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(id=k.id, name=k.name, kind=k.kind.value, actor=k.actor, tenant=k.tenant,
                     created_at=k.created_at, expires_at=k.expires_at,
                     revoked=k.revoked_at is not None, totp=k.totp)


@router.get("/admin/api-keys", response_model=list[ApiKeyOut], tags=["admin"],
            responses=problem_docs(403))
async def list_api_keys(gw: GatewayDep, who: Caller) -> list[ApiKeyOut]:
    """The API keys of the caller's tenant (never a secret; create them with
    ``vault gateway keys create``)."""
    def run() -> list[ApiKeyOut]:
        _authorise(gw, who, "policy", "policy.admin")
        return [_api_key(k) for k in gw.vault.identity.list_keys(tenant=who.actor.tenant)]

    return await run_in_threadpool(run)


@router.delete("/admin/api-keys/{key_id}", response_model=ApiKeyOut, tags=["admin"],
               responses=problem_docs(403, 404))
async def revoke_api_key(gw: GatewayDep, who: Caller,
                         key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]) -> ApiKeyOut:
    """Revoke an API key of the caller's tenant (needs a second factor); every
    replica refuses it from its next use."""
    def run() -> ApiKeyOut:
        found = gw.vault.identity.get_key(key_id)
        if found.tenant != who.actor.tenant:
            raise NotFound("no such API key")
        return _api_key(gw.vault.identity.revoke_key(found.id, actor=who.actor))

    return await run_in_threadpool(run)


# ---------------------------------------------------------------- policy


@router.post("/admin/policy/check", response_model=PolicyCheckOut, tags=["admin"],
             responses=problem_docs(403))
async def policy_check(gw: GatewayDep, who: Caller, body: PolicyCheckIn) -> PolicyCheckOut:
    """Whether an actor of the caller's tenant may do an action on an object for a
    purpose (needs ``policy.admin`` and a second factor)."""
    def run() -> bool:
        _authorise(gw, who, "policy", "policy.admin")
        gw.require_step_up(who, "policy")
        return gw.vault.policy.check(Actor(body.actor, who.actor.tenant), body.object,
                                     body.action, purpose=body.purpose)

    return PolicyCheckOut(allowed=await run_in_threadpool(run))


# ---------------------------------------------------------------- keys


@router.get("/admin/keys", response_model=KeyStatusOut, tags=["admin"],
            responses=problem_docs(403))
async def key_status(gw: GatewayDep, who: Caller) -> KeyStatusOut:
    """Key-encryption-key versions and how many data keys each wraps."""
    def run() -> KeyStatusOut:
        _authorise(gw, who, "keys", "keys.rotate")
        status = gw.vault.keys.status()
        return KeyStatusOut(current_version=status.current_version,
                            versions=list(status.versions),
                            data_keys_by_version={str(k): v for k, v in
                                                  status.data_keys_by_version.items()})

    return await run_in_threadpool(run)


@router.post("/admin/keys/rotate", response_model=RotationOut, tags=["admin"],
             responses=problem_docs(403, 409))
async def rotate_keys(gw: GatewayDep, who: Caller) -> RotationOut:
    """Make a new KEK version and rewrap every data key: an administrator of the
    caller's tenant with a second factor (audited as ``keys.rotate`` and
    ``keys.rewrap``). The KEKs are the whole vault's; rotation loses nothing."""
    def run() -> RotationOut:
        result = gw.vault.keys.rotate(actor=who.actor)
        return RotationOut(new_version=result.new_version, rewrapped=result.rewrapped)

    return await run_in_threadpool(run)
