"""API keys and TOTP (vault.identity) and their use over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from typer.testing import CliRunner

from tests.gateway.conftest import customer
from vault import FixedClock, Vault, VaultSettings
from vault.cli import app as cli
from vault.gateway import GatewaySettings, create_app
from vault.identity import AuthenticationFailed
from vault.store.tables import AUDIT_LOG

BASE = "/v1/collections/customers/records"


def _bearer(key: str, purpose: str | None = "account_management", **extra: str
            ) -> dict[str, str]:
    h = {"Authorization": f"Bearer {key}", **extra}
    if purpose:
        h["X-Purpose"] = purpose
    return h


def _refusals(vault: Vault) -> list[str]:
    with vault.engine.connect() as conn:
        return list(conn.execute(select(AUDIT_LOG.c.reason).where(
            AUDIT_LOG.c.action == "identity.authenticate")).scalars())


def test_a_service_key_calls_the_gateway_and_is_named_in_the_audit(
        vault: Vault, client: TestClient) -> None:
    """A key made for crm in acme creates and reads; its id is in every entry; only a
    keyed hash of the secret is stored."""
    key, secret = vault.identity.create_key("billing", actor_id="crm", tenant="acme")
    assert secret.startswith(f"vk_{key.id}_")
    made = client.post(BASE, json={"data": customer()},
                       headers=_bearer(secret, **{"X-Request-ID": "key-req-0001",
                                                  "X-On-Behalf-Of": "agent-7"}))
    assert made.status_code == 201, made.text
    with vault.engine.connect() as conn:
        contexts = [json.loads(c) for c in conn.execute(select(AUDIT_LOG.c.context).where(
            AUDIT_LOG.c.request_id == "key-req-0001")).scalars()]
        stored = conn.execute(text("SELECT * FROM identity_api_keys")).all()
    assert contexts and all(c["credential_id"] == f"key:{key.id}" for c in contexts)
    assert all(c["on_behalf_of"] == "agent-7" for c in contexts)
    assert secret.split("_", 2)[2] not in repr(stored)
    assert [k.name for k in vault.identity.list_keys(tenant="acme")] == ["billing"]


def test_revoked_wrong_and_expired_keys_are_refused_and_audited(
        settings: VaultSettings, gateway_settings: GatewaySettings) -> None:
    """Revoked, expired, unknown and tampered keys are 401, each audited."""
    clock = FixedClock(dt.datetime.now(dt.UTC))
    with Vault.init(settings=settings, clock=clock) as vault:
        vault.roles.assign("crm", "crm_service", tenant="acme")
        _, live = vault.identity.create_key("live", actor_id="crm", tenant="acme")
        _, gone = vault.identity.create_key("gone", actor_id="crm", tenant="acme")
        _, soon = vault.identity.create_key("soon", actor_id="crm", tenant="acme",
                                            expires_at=clock.now() + dt.timedelta(hours=1))
        vault.identity.revoke_key("gone")
        with TestClient(create_app(vault, gateway_settings)) as c:
            assert c.get(f"{BASE}/x1", headers=_bearer(soon)).status_code == 404
            clock.advance(dt.timedelta(hours=2))
            attempts = {"revoked": gone, "expired": soon, "bad_secret": live[:-3] + "AAA",
                        "unknown": "vk_0123456789abcdef_" + "A" * 43, "malformed": "vk_x"}
            for presented in attempts.values():
                r = c.get(f"{BASE}/x1", headers=_bearer(presented))
                assert r.status_code == 401 and presented not in r.text
            assert c.get(f"{BASE}/x1", headers=_bearer(live)).status_code == 404
        reasons = [r.split(":")[0] for r in _refusals(vault)]
        assert sorted(reasons) == sorted(attempts)
        assert vault.audit_log.verify().ok


def test_totp_step_up_of_a_person_key_and_replay(vault: Vault, client: TestClient) -> None:
    """A person key with TOTP steps up once per code; the replayed code is refused;
    a service key never steps up."""
    _, secret = vault.identity.create_key("dana-laptop", actor_id="dana", tenant="acme",
                                            kind="person")
    uri = vault.identity.enrol_totp("dana-laptop")
    base32 = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
    otp = pyotp.TOTP(base32)
    with vault.engine.connect() as conn:  # the TOTP secret is stored encrypted
        boxes = conn.execute(text("SELECT secret_box FROM identity_totp")).scalars().all()
    assert boxes and all(base32.encode() not in bytes(b) for b in boxes)
    code = otp.now()
    first = client.post("/v1/auth/step-up", json={"method": "totp", "code": code},
                        headers=_bearer(secret, None))
    assert first.status_code == 200, first.text
    assert first.json()["factor"] == "totp"
    again = client.post("/v1/auth/step-up", json={"method": "totp", "code": code},
                        headers=_bearer(secret, None))
    assert again.status_code == 403
    assert any(r.startswith("totp_replay") for r in _refusals(vault))
    # The step-up token opens what needs a second factor (a sensitive field).
    rid = client.post(BASE, json={"data": customer(national_id="X1234567")},
                      headers=_bearer(vault.identity.create_key(
                          "crm", actor_id="crm", tenant="acme")[1])).json()["id"]
    h = _bearer(secret, "dsar_fulfilment", **{"X-Step-Up": first.json()["step_up_token"]})
    assert client.get(f"{BASE}/{rid}", headers=h).json()["data"]["national_id"] == "X1234567"
    _, service = vault.identity.create_key("svc", actor_id="crm", tenant="acme")
    refused = client.post("/v1/auth/step-up", json={"method": "totp", "code": otp.now()},
                          headers=_bearer(service, None))
    assert refused.status_code == 403
    with pytest.raises(Exception, match="person"):
        vault.identity.enrol_totp("svc")


def test_totp_code_is_refused_when_wrong(vault: Vault) -> None:
    """A wrong code is refused (and audited)."""
    key, _ = vault.identity.create_key("p", actor_id="dana", tenant="acme", kind="person")
    vault.identity.enrol_totp("p")
    with pytest.raises(AuthenticationFailed):
        vault.identity.verify_totp(key.id, "000000")


def test_on_behalf_of_is_for_services(vault: Vault, client: TestClient) -> None:
    """A person credential may not claim to act for somebody else."""
    _, person = vault.identity.create_key("pp", actor_id="dana", tenant="acme", kind="person")
    r = client.get(f"{BASE}/x1", headers=_bearer(person, "dsar_fulfilment",
                                                   **{"X-On-Behalf-Of": "ada"}))
    assert r.status_code == 400 and r.json()["code"] == "invalid_on_behalf_of"


def test_cli_keys_create_list_revoke_and_totp(sqlite_settings: VaultSettings) -> None:
    """`vault gateway keys create` prints the key once; list, revoke and TOTP enrol."""
    Vault.init(settings=sqlite_settings).close()
    env = {"VAULT_HOME": str(sqlite_settings.home),
           "VAULT_POLICIES": str(sqlite_settings.resolved_policies)}
    runner = CliRunner()
    made = runner.invoke(cli, ["gateway", "keys", "create", "billing", "--actor", "crm",
                               "--tenant", "acme"], env=env)
    assert made.exit_code == 0, made.output
    secret = made.output.strip().splitlines()[-1]
    assert secret.startswith("vk_")
    listed = runner.invoke(cli, ["gateway", "keys", "list"], env=env)
    assert "billing" in listed.output and secret not in listed.output
    person = runner.invoke(cli, ["gateway", "keys", "create", "dana", "--actor", "dana",
                                 "--tenant", "acme", "--kind", "person"], env=env)
    assert person.exit_code == 0
    enrol = runner.invoke(cli, ["gateway", "totp", "enrol", "dana"], env=env)
    assert enrol.exit_code == 0 and "otpauth://totp/" in enrol.output
    revoked = runner.invoke(cli, ["gateway", "keys", "revoke", "billing"], env=env)
    assert revoked.exit_code == 0
    with Vault.open(settings=sqlite_settings) as v, pytest.raises(AuthenticationFailed):
        v.identity.authenticate(secret)
