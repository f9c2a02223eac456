"""Consent, subjects, audit and administration over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.gateway.conftest import CANARY_EMAIL, Issuer, customer
from vault import Vault
from vault.store.tables import AUDIT_LOG

BASE = "/v1/collections/customers/records"


def _created(client: TestClient, issuer: Issuer, jurisdiction: str = "DE") -> dict[str, str]:
    r = client.post(BASE, json={"data": customer(), "jurisdiction": jurisdiction},
                    headers=issuer.headers("crm"))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _subject(client: TestClient, issuer: Issuer, jurisdiction: str = "DE") -> str:
    return _created(client, issuer, jurisdiction)["subject_id"]


def test_consent_grant_state_withdraw_history_receipt(client: TestClient,
                                                      issuer: Issuer) -> None:
    """The consent ledger over HTTP, with the caller's tenant and actor."""
    sid = _subject(client, issuer)
    h = issuer.headers("crm", None)
    g = client.post(f"/v1/subjects/{sid}/consents", headers=h, json={
        "purpose": "marketing", "notice_id": "marketing", "notice_version": 2})
    assert g.status_code == 201, g.text
    event = g.json()
    assert event["kind"] == "grant" and event["subject_id"] == sid
    state = client.get(f"/v1/subjects/{sid}/consents", headers=h).json()
    assert [(s["purpose"], s["status"]) for s in state] == [("marketing", "granted")]
    # Now marketing may read the record.
    w = client.post(f"/v1/subjects/{sid}/consents/withdraw", headers=h,
                    json={"purpose": "marketing"})
    assert w.status_code == 201 and w.json()["kind"] == "withdraw"
    hist = client.get(f"/v1/subjects/{sid}/consents/history", headers=h,
                      params={"limit": 1}).json()
    assert len(hist["items"]) == 1 and hist["next_cursor"]
    rest = client.get(f"/v1/subjects/{sid}/consents/history", headers=h,
                      params={"cursor": hist["next_cursor"]}).json()
    assert [e["kind"] for e in hist["items"] + rest["items"]] == ["grant", "withdraw"]
    receipt = client.get(f"/v1/consents/{event['event_id']}/receipt", headers=h)
    assert receipt.status_code == 200 and receipt.json()["alg"] == "Ed25519"


def test_consent_needs_consent_manage(client: TestClient, issuer: Issuer) -> None:
    """An analyst may not record consent: 403, no detail."""
    sid = _subject(client, issuer)
    r = client.post(f"/v1/subjects/{sid}/consents/withdraw", json={"purpose": "marketing"},
                    headers=issuer.headers("andy", None))
    assert r.status_code == 403 and r.json()["code"] == "access_denied"


def test_subjects_jurisdiction_and_restriction(client: TestClient, issuer: Issuer) -> None:
    """The DPO reads a subject, moves it, restricts and lifts it."""
    made = _created(client, issuer)
    sid = made["subject_id"]
    dpo = issuer.headers("dana", None)
    info = client.get(f"/v1/subjects/{sid}", headers=dpo).json()
    assert info["jurisdiction"] == "DE" and info["restricted"] is False
    moved = client.put(f"/v1/subjects/{sid}/jurisdiction", json={"jurisdiction": "US-CA"},
                       headers=dpo).json()
    assert moved["jurisdiction"] == "US-CA"
    r = client.put(f"/v1/subjects/{sid}/restriction", json={"reason": "gdpr_18_1_a"},
                   headers=dpo)
    assert r.status_code == 200 and r.json()["restricted"] is True
    refused = client.get(f"{BASE}/{made['id']}", headers=issuer.headers("crm"))
    assert refused.status_code == 403 and refused.json()["code"] == "subject_restricted"
    assert client.delete(f"/v1/subjects/{sid}/restriction",
                         headers=dpo).json()["restricted"] is False
    assert client.get("/v1/subjects/nobody", headers=dpo).status_code == 404


def test_audit_verify_reports_and_checkpoint(client: TestClient, issuer: Issuer) -> None:
    """A compliance officer verifies the log, reads reports as JSON, CSV and HTML
    (no PII in them) and writes a checkpoint."""
    sid = _subject(client, issuer)
    colin = issuer.headers("colin", None)
    v = client.post("/v1/audit/verify", headers=colin)
    assert v.status_code == 200 and v.json()["ok"] is True
    as_json = client.get("/v1/audit/reports/entries", headers=colin)
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"].startswith("application/json")
    assert json.loads(as_json.text)
    csv = client.get("/v1/audit/reports/denials", params={"format": "csv"}, headers=colin)
    assert csv.headers["content-type"].startswith("text/csv")
    html = client.get("/v1/audit/reports/subject_access",
                      params={"format": "html", "subject": sid}, headers=colin)
    assert html.status_code == 200 and "<html" in html.text.lower()
    for r in (as_json, csv, html):
        assert CANARY_EMAIL not in r.text
    cp = client.post("/v1/audit/checkpoints", headers=colin)
    assert cp.status_code == 201 and cp.json()["name"]
    assert client.post("/v1/audit/verify", headers=issuer.headers("sally", None)).status_code \
        == 403


def test_admin_roles_policy_keys(client: TestClient, issuer: Issuer,
                                 stepped_up: Callable[[str], str]) -> None:
    """The administrator lists roles, checks the policy, reads key status and rotates."""
    token = stepped_up("ada")
    ada = issuer.headers("ada", None, step_up=token)
    roles = client.get("/v1/admin/roles", headers=ada, params={"limit": 3}).json()
    assert len(roles["items"]) == 3 and roles["next_cursor"]
    check = client.post("/v1/admin/policy/check", headers=ada, json={
        "actor": "sally", "object": "customers.email", "action": "read",
        "purpose": "account_management"})
    assert check.status_code == 200 and check.json() == {"allowed": True}
    keys = client.get("/v1/admin/keys", headers=ada)
    assert keys.status_code == 200, keys.text
    assert keys.json()["current_version"] in keys.json()["versions"]
    # Rotation loses nothing: a tenant's administrator with a second factor starts it.
    rotated = client.post("/v1/admin/keys/rotate", headers=ada)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["new_version"] == keys.json()["current_version"] + 1
    assert client.delete("/v1/admin/roles/andy/analyst", headers=ada).json() == {
        "changed": True}
    # Not an administrator: 403, with or without a second factor.
    sam = issuer.headers("sam", None, step_up=stepped_up("sam"))
    assert client.get("/v1/admin/keys", headers=sam).status_code == 403
    assert client.get("/v1/admin/roles", headers=sam).status_code == 403


def test_key_rotation_by_a_stepped_up_administrator(client: TestClient, issuer: Issuer,
                                                    vault: Vault,
                                                    stepped_up: Callable[[str], str]) -> None:
    """POST /v1/admin/keys/rotate: an administrator with a second factor makes a new
    KEK version and rewraps every data key, audited under its name with the factor;
    without a factor it is 403 step_up_required, for a non-administrator 403."""
    _created(client, issuer)
    before = vault.keys.status()
    plain = client.post("/v1/admin/keys/rotate", headers=issuer.headers("ada", None))
    assert plain.status_code == 403 and plain.json()["code"] == "step_up_required"
    sam = issuer.headers("sam", None, step_up=stepped_up("sam"))
    assert client.post("/v1/admin/keys/rotate", headers=sam).json()["code"] == "access_denied"
    assert vault.keys.status().current_version == before.current_version
    ada = {**issuer.headers("ada", None, step_up=stepped_up("ada")),
           "X-Request-ID": "rotate-1"}
    r = client.post("/v1/admin/keys/rotate", headers=ada)
    assert r.status_code == 200, r.text
    assert r.json() == {"new_version": before.current_version + 1, "rewrapped": 1}
    after = vault.keys.status()
    assert after.current_version == before.current_version + 1
    assert after.data_keys_by_version == {after.current_version: 1}
    with vault.engine.connect() as conn:
        rows = conn.execute(select(AUDIT_LOG.c.action, AUDIT_LOG.c.actor, AUDIT_LOG.c.tenant,
                                   AUDIT_LOG.c.decision, AUDIT_LOG.c.context).where(
            AUDIT_LOG.c.request_id == "rotate-1").order_by(AUDIT_LOG.c.seq)).all()
    assert [(a, who, t, d) for a, who, t, d, _ in rows] == [
        ("keys.rotate", "ada", "acme", "allow"), ("keys.rewrap", "ada", "acme", "allow")]
    assert all(json.loads(c)["factor"] == "jwt:otp" for *_, c in rows)
    with vault.engine.connect() as conn:
        denied = conn.execute(select(AUDIT_LOG.c.actor, AUDIT_LOG.c.reason).where(
            AUDIT_LOG.c.action == "keys.rotate", AUDIT_LOG.c.decision == "deny")).all()
    assert sorted(denied) == [("ada", "step_up_required"), ("sam", "access_denied")]


def test_health(client: TestClient) -> None:
    """/healthz answers without credentials; /readyz checks the parts."""
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok"
    assert set(ready["checks"]) == {"database", "keystore", "key_provider", "audit"}
