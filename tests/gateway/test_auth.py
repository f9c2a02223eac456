"""Authentication and the actor: bearer JWTs verified strictly, every route closed
without them, attacks refused and audited, step-up for the most sensitive actions."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.gateway.conftest import AUDIENCE, ISSUER, Issuer, customer
from vault import Vault
from vault.gateway import GatewaySettings, create_app
from vault.store.tables import AUDIT_LOG

BASE = "/v1/collections/customers/records"
OPEN = {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _auth_refusals(vault: Vault) -> list[str]:
    with vault.engine.connect() as conn:
        return [r for r in conn.execute(select(AUDIT_LOG.c.reason).where(
            AUDIT_LOG.c.action == "gateway.authenticate")).scalars()]


def _operations(client: TestClient) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return [(method.upper(), path) for path, item in spec["paths"].items()
            for method in item if method in ("get", "post", "put", "patch", "delete")]


def test_every_route_needs_a_credential(client: TestClient) -> None:
    """No operation but health answers without authentication (401)."""
    operations = _operations(client)
    assert len(operations) > 20
    for method, route in operations:
        if route in OPEN:
            continue
        path = route
        for name in ("collection", "record_id", "subject_id", "event_id", "user", "role",
                     "view"):
            path = path.replace("{" + name + "}", "customers" if name == "collection"
                                else "entries" if name == "view" else "x1")
        r = client.request(method, path, json={}, headers={"X-Purpose": "security"})
        assert r.status_code == 401, (method, route, r.status_code)
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_every_route_passes_an_actor_never_the_local_operator(client: TestClient) -> None:
    """Every /v1 operation depends on the authenticated caller, so no route can call
    the library as the local operator (actor=None)."""
    from vault.gateway._admin import router as admin
    from vault.gateway._compliance import router as compliance
    from vault.gateway._core import caller
    from vault.gateway._dsar import router as dsar
    from vault.gateway._records import router as records

    def depends_on_caller(dependant: Any) -> bool:
        return any(d.call is caller or depends_on_caller(d) for d in dependant.dependencies)

    seen = set()
    for router in (admin, compliance, dsar, records):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            assert depends_on_caller(route.dependant), route.path
            seen.update((m, route.path) for m in route.methods)
    # ... and those routers are every /v1 operation of the app.
    assert {op for op in _operations(client) if op[1].startswith("/v1")} == seen


@pytest.mark.parametrize("attack", [
    "expired", "not_yet_valid", "wrong_audience", "wrong_issuer", "alg_none",
    "hs256_with_public_key", "tampered", "unknown_kid", "no_tenant", "garbage"])
def test_token_attacks_are_refused_and_audited(client: TestClient, issuer: Issuer,
                                               vault: Vault, attack: str) -> None:
    """Each forged or stale token is 401 and leaves an audit entry naming why."""
    now = int(time.time())
    good = {"iss": ISSUER, "aud": AUDIENCE, "sub": "crm", "tenant": "acme",
            "iat": now, "exp": now + 300}
    sign = lambda claims: jwt.encode(claims, issuer.key, algorithm="RS256",  # noqa: E731
                                     headers={"kid": issuer.kid})
    if attack == "expired":
        token = sign({**good, "exp": now - 600})
    elif attack == "not_yet_valid":
        token = sign({**good, "nbf": now + 600})
    elif attack == "wrong_audience":
        token = sign({**good, "aud": "another-service"})
    elif attack == "wrong_issuer":
        token = sign({**good, "iss": "https://evil.example.com"})
    elif attack == "alg_none":
        token = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': issuer.kid})}.{_b64(good)}."
    elif attack == "hs256_with_public_key":
        # Key confusion: HMAC "signed" with the RSA public key's bytes.
        from cryptography.hazmat.primitives import serialization

        pem = issuer.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        import hashlib
        import hmac

        head = _b64({"alg": "HS256", "typ": "JWT", "kid": issuer.kid})
        body = _b64(good)
        mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
        token = f"{head}.{body}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    elif attack == "tampered":
        head, _, sig = sign(good).split(".")
        token = f"{head}.{_b64({**good, 'sub': 'ada'})}.{sig}"
    elif attack == "unknown_kid":
        token = jwt.encode(good, issuer.key, algorithm="RS256", headers={"kid": "k9"})
    elif attack == "no_tenant":
        token = sign({k: v for k, v in good.items() if k != "tenant"})
    else:
        token = "not-a-jwt"
    before = len(_auth_refusals(vault))
    r = client.get(f"{BASE}/x1", headers={"Authorization": f"Bearer {token}",
                                          "X-Purpose": "account_management"})
    assert r.status_code == 401
    assert r.json()["code"] == "unauthenticated"
    assert token not in r.text
    assert len(_auth_refusals(vault)) == before + 1


def test_hmac_algorithms_cannot_be_configured(issuer: Issuer) -> None:
    """The verifier accepts asymmetric algorithms only."""
    from vault.errors import ConfigError

    with pytest.raises(ConfigError):
        GatewaySettings.from_env(jwt_algorithms=("HS256",))
    with pytest.raises(ConfigError):
        GatewaySettings.from_env(jwt_algorithms=("none",))


def test_the_actor_and_tenant_come_from_the_token_only(client: TestClient,
                                                       issuer: Issuer) -> None:
    """A record made in tenant acme is not found from tenant other, whatever the body says."""
    rid = client.post(BASE, json={"data": customer()}, headers=issuer.headers("crm")).json()["id"]
    other = issuer.headers("crm", tenant="other")
    assert client.get(f"{BASE}/{rid}", headers={**other, "X-Tenant": "acme"}).status_code in (
        403, 404)
    bad = client.post(BASE, json={"data": customer(), "tenant": "acme"},
                      headers=issuer.headers("crm"))
    assert bad.status_code == 422  # unknown body keys are refused


def test_audit_entries_name_the_credential_and_request(client: TestClient, issuer: Issuer,
                                                       vault: Vault) -> None:
    """Every entry made through the gateway carries its request id and credential id."""
    r = client.post(BASE, json={"data": customer()},
                    headers={**issuer.headers("crm", jti="tok-123"),
                             "X-Request-ID": "req-abcdef12"})
    assert r.headers["x-request-id"] == "req-abcdef12"
    with vault.engine.connect() as conn:
        rows = conn.execute(select(AUDIT_LOG.c.context, AUDIT_LOG.c.action).where(
            AUDIT_LOG.c.request_id == "req-abcdef12")).all()
    assert rows
    for context, _action in rows:
        assert json.loads(context)["credential_id"].startswith("jwt:")


def test_step_up_from_a_jwt_second_factor(client: TestClient, issuer: Issuer,
                                          vault: Vault,
                                          stepped_up: Callable[[str], str]) -> None:
    """amr with a second factor and a recent auth_time give a step-up token; the audit
    entry of a stepped-up action records the factor and its time."""
    token = stepped_up("dana")
    rid = client.post(BASE, json={"data": customer()}, headers=issuer.headers("crm")).json()["id"]
    h = {**issuer.headers("dana", "dsar_fulfilment", step_up=token),
         "X-Request-ID": "stepped-up-1"}
    assert client.delete(f"{BASE}/{rid}", headers=h).status_code == 204
    with vault.engine.connect() as conn:
        ctx = conn.execute(select(AUDIT_LOG.c.context).where(
            AUDIT_LOG.c.request_id == "stepped-up-1", AUDIT_LOG.c.action == "delete")).scalar()
    assert ctx is not None
    assert json.loads(ctx)["factor"] == "jwt:otp" and json.loads(ctx)["factor_at"]


@pytest.mark.parametrize("claims", [
    {"amr": ["pwd"], "auth_time": "now"},
    {"amr": ["otp"], "auth_time": "old"},
    {"amr": ["otp"], "auth_time": "now", "vault_kind": "service"},
])
def test_step_up_is_refused_without_a_fresh_person_factor(
        client: TestClient, issuer: Issuer, claims: dict[str, Any]) -> None:
    """A password alone, an old authentication, or a service: no step-up."""
    when = {"now": int(time.time()), "old": int(time.time()) - 3600}
    claims = {**claims, "auth_time": when[claims["auth_time"]]}
    r = client.post("/v1/auth/step-up", json={"method": "jwt"},
                    headers=issuer.headers("dana", None, **claims))
    assert r.status_code == 403 and r.json()["code"] == "step_up_refused"


def test_a_step_up_token_is_bound_to_its_person(client: TestClient, issuer: Issuer,
                                                stepped_up: Callable[[str], str]) -> None:
    """Another caller presenting someone's step-up token is refused."""
    token = stepped_up("dana")
    r = client.get("/v1/admin/keys", headers=issuer.headers("ada", None, step_up=token))
    assert r.status_code == 401 and r.json()["code"] == "step_up_invalid"


def test_step_up_needed_for_key_rotation_and_roles(client: TestClient, issuer: Issuer,
                                                   stepped_up: Callable[[str], str]) -> None:
    """Key rotation and role changes refuse a caller without a second factor (403)."""
    r = client.post("/v1/admin/keys/rotate", headers=issuer.headers("ada", None))
    assert r.status_code == 403 and r.json()["code"] == "step_up_required"
    r = client.post("/v1/admin/roles", json={"user": "newbie", "role": "analyst"},
                    headers=issuer.headers("ada", None))
    assert r.status_code == 403 and r.json()["code"] == "step_up_required"
    ok = client.post("/v1/admin/roles", json={"user": "newbie", "role": "analyst"},
                     headers=issuer.headers("ada", None, step_up=stepped_up("ada")))
    assert ok.status_code == 200 and ok.json() == {"changed": True}


def test_without_a_jwks_every_bearer_is_refused(vault: Vault) -> None:
    """Denied by default: a gateway with no issuer configured lets nobody in."""
    with TestClient(create_app(vault, GatewaySettings())) as c:
        r = c.get(f"{BASE}/x1", headers={"Authorization": "Bearer abc",
                                         "X-Purpose": "account_management"})
        assert r.status_code == 401
