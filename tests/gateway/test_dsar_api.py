"""Data-subject requests over HTTP: an access request and an erasure request end to
end, 401/403 on every route, step-up for the export and the erasure, invalid moves
as typed problems, no canary in errors or the access log, and an export download
that verifies with the library's verify function."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.gateway.conftest import CANARY_EMAIL, CANARY_ID, CANARY_NAME, Issuer, customer
from vault import Vault
from vault.audit.checkpoint import load_public_key
from vault.dsar import verify_bundle, verify_document
from vault.errors import InvalidExport

BASE = "/v1/dsar/requests"
CANARIES = (CANARY_EMAIL, CANARY_NAME, CANARY_ID, "canary.zq7x", "Canaryson")


def _customer(client: TestClient, issuer: Issuer, jurisdiction: str = "DE") -> dict[str, str]:
    r = client.post("/v1/collections/customers/records",
                    json={"data": customer(national_id=CANARY_ID), "jurisdiction": jurisdiction},
                    headers=issuer.headers("crm"))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _no_canary(blob: str) -> None:
    lowered = blob.lower()
    for canary in CANARIES:
        assert canary.lower() not in lowered, canary


def _extract(payload: bytes, fmt: str, into: Path) -> Path:
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            names = archive.namelist()
            for name in names:
                top, _, leaf = name.partition("/")
                assert top.startswith("dsar-") and leaf and "/" not in leaf
                (into / top).mkdir(parents=True, exist_ok=True)
                (into / name).write_bytes(archive.read(name))
    else:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as archive:
            names = archive.getnames()
            archive.extractall(into, filter="data")
    tops = {n.split("/")[0] for n in names}
    assert len(tops) == 1
    return into / tops.pop()


def test_access_request_end_to_end(client: TestClient, issuer: Issuer, vault: Vault,
                                   stepped_up: Callable[[str], str], tmp_path: Path) -> None:
    """A CRM service files an access request with the requester's e-mail (in the
    body); the DPO lists, verifies, acknowledges, extends and processes it with a
    second factor, downloads the bundle as zip and tar, and both verify."""
    made = _customer(client, issuer)
    sub = client.post(BASE, json={"kind": "access", "identifiers": {"email": CANARY_EMAIL},
                                  "channel": "email"}, headers=issuer.headers("crm", None))
    assert sub.status_code == 201, sub.text
    req = sub.json()
    assert (req["state"], req["regime"], req["subject_id"]) == (
        "received", "gdpr", made["subject_id"])
    assert req["due_on"] and req["history"][0]["event"] == "submitted"
    _no_canary(sub.text)
    rid = req["id"]
    dana = issuer.headers("dana", None)

    listed = client.get(BASE, headers=dana, params={"state": "received", "kind": "access"})
    assert listed.status_code == 200, listed.text
    assert [r["id"] for r in listed.json()["items"]] == [rid]
    assert client.get(BASE, headers=dana, params={"overdue": True}).json()["items"] == []
    soon = client.get(BASE, headers=dana, params={"due_within": 400, "limit": 1}).json()
    assert [r["id"] for r in soon["items"]] == [rid] and soon["next_cursor"] is None
    assert client.get(BASE, headers=dana, params={"state": "completed"}).json()["items"] == []

    v = client.post(f"{BASE}/{rid}/verify", headers=dana,
                    json={"evidence": {"full_name": CANARY_NAME.upper()}})
    assert v.status_code == 200, v.text
    assert v.json()["state"] == "identity_verified"
    assert v.json()["verification"]["result"] == "verified"
    _no_canary(v.text)
    ack = client.post(f"{BASE}/{rid}/acknowledge", headers=dana)
    assert ack.status_code == 200 and ack.json()["acknowledged_at"]
    ext = client.post(f"{BASE}/{rid}/extend", headers=dana, json={"reason": "complexity"})
    assert ext.status_code == 200, ext.text
    assert ext.json()["extended"] is True and ext.json()["due_on"] > req["due_on"]

    # Processing an access request writes an export: a second factor first.
    refused = client.post(f"{BASE}/{rid}/process", headers=dana)
    assert refused.status_code == 403 and refused.json()["reason"] == "step_up_required"
    assert client.get(f"{BASE}/{rid}", headers=dana).json()["state"] == "identity_verified"
    stepped = issuer.headers("dana", None, step_up=stepped_up("dana"))
    done = client.post(f"{BASE}/{rid}/process", headers=stepped)
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["state"] == "completed"
    assert body["result"]["export_available"] is True and "export" not in body["result"]
    assert body["result"]["records"] == 1
    assert [h["event"] for h in body["history"]] == [
        "submitted", "verified", "acknowledged", "extended", "processing", "completed"]
    _no_canary(done.text)

    # The download: dsar.process and a second factor; audited before it is sent.
    no_factor = client.get(f"{BASE}/{rid}/export", headers=dana)
    assert no_factor.status_code == 403 and no_factor.json()["code"] == "step_up_required"
    key = load_public_key(vault.audit.export_public_key())
    for fmt in ("zip", "tar"):
        got = client.get(f"{BASE}/{rid}/export", headers=stepped, params={"format": fmt})
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == {"zip": "application/zip",
                                               "tar": "application/x-tar"}[fmt]
        assert got.headers["cache-control"] == "no-store"
        assert f'filename="dsar-{rid}.{fmt}"' in got.headers["content-disposition"]
        folder = _extract(got.content, fmt, tmp_path / fmt)
        manifest = verify_bundle(folder, key)
        assert manifest["request_id"] == rid
        records = json.loads((folder / "records.json").read_text())
        assert [r["record_id"] for r in records["customers"]] == [made["id"]]
        assert records["customers"][0]["email"] == CANARY_EMAIL
        # ... and a changed file no longer verifies.
        (folder / "records.json").write_text("{}")
        with pytest.raises(InvalidExport):
            verify_bundle(folder, key)
    with vault.engine.connect() as conn:
        downloads = conn.execute(text(
            "SELECT actor, reason, context FROM audit_log "
            "WHERE action = 'dsar.export_download' ORDER BY seq")).all()
    files = len(manifest["files"]) + 2   # and manifest.json, manifest.sig
    assert [(d.actor, d.reason) for d in downloads] == [
        ("dana", f"format:zip:files:{files}"), ("dana", f"format:tar:files:{files}")]
    assert all("factor" in (d.context or "") for d in downloads)

    # A closed request cannot move on: a typed 409.
    again = client.post(f"{BASE}/{rid}/process", headers=stepped)
    assert again.status_code == 409 and again.json()["code"] == "invalid_transition"
    assert again.headers["content-type"] == "application/problem+json"


def test_erasure_request_end_to_end(client: TestClient, issuer: Issuer, vault: Vault,
                                    stepped_up: Callable[[str], str]) -> None:
    """The DPO records an erasure for a known subject, accepts the requester as known
    (GDPR Art. 12(6)), cannot process it without a second factor, then erases: the
    record is gone and the signed certificate (no PII) is in the answer."""
    made = _customer(client, issuer)
    dana = issuer.headers("dana", None)
    sub = client.post(BASE, headers=dana, json={"kind": "erasure",
                                                "subject_id": made["subject_id"]})
    assert sub.status_code == 201, sub.text
    rid = sub.json()["id"]
    # A duplicate open erasure of the same subject is linked, not doubled.
    dup = client.post(BASE, headers=dana, json={"kind": "erasure",
                                                "subject_id": made["subject_id"]})
    assert dup.status_code == 201 and dup.json()["id"] == rid
    # Not verified yet: processing is an invalid move.
    early = client.post(f"{BASE}/{rid}/process", headers=issuer.headers(
        "dana", None, step_up=stepped_up("dana")))
    assert early.status_code == 409 and early.json()["code"] == "invalid_transition"
    v = client.post(f"{BASE}/{rid}/verify", headers=dana,
                    json={"accept_as_known": "signed_in_customer"})
    assert v.status_code == 200 and v.json()["verification"]["result"] == "accepted_as_known"
    again = client.post(f"{BASE}/{rid}/verify", headers=dana, json={"evidence": {
        "full_name": CANARY_NAME}})
    assert again.status_code == 409 and again.json()["code"] == "invalid_transition"
    _no_canary(again.text)

    refused = client.post(f"{BASE}/{rid}/process", headers=dana)
    assert refused.status_code == 403 and refused.json()["code"] == "step_up_required"
    stepped = issuer.headers("dana", None, step_up=stepped_up("dana"))
    done = client.post(f"{BASE}/{rid}/process", headers=stepped)
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["state"] == "completed"
    certificate = body["result"]["certificate"]
    assert certificate["request_id"] == rid and certificate["destroyed"]["data_key"] is True
    verify_document(certificate, load_public_key(vault.audit.export_public_key()))
    _no_canary(done.text)
    assert made["subject_id"] not in json.dumps(certificate)
    gone = client.get(f"/v1/collections/customers/records/{made['id']}",
                      headers=issuer.headers("crm"))
    assert gone.status_code in (404, 410)
    # No export for an erasure; closed requests refuse every move.
    assert client.get(f"{BASE}/{rid}/export", headers=stepped).status_code == 404
    for move, payload in (("complete", None), ("extend", {"reason": "complexity"}),
                          ("reject", {"reason_code": "other"}), ("acknowledge", None)):
        r = client.post(f"{BASE}/{rid}/{move}", headers=dana, json=payload)
        assert r.status_code == 409, (move, r.text)
        assert r.json()["code"] == "invalid_transition"
        assert set(r.json()) <= {"type", "title", "status", "code", "request_id"}


def test_reject_complete_and_report(client: TestClient, issuer: Issuer) -> None:
    """A rejection carries its reason code; an automated-decision review is
    completed after a person's review; the report answers JSON and CSV."""
    made = _customer(client, issuer)
    dana = issuer.headers("dana", None)
    r = client.post(BASE, headers=dana, json={"kind": "objection",
                                              "subject_id": made["subject_id"]}).json()
    rej = client.post(f"{BASE}/{r['id']}/reject", headers=dana,
                      json={"reason_code": "manifestly_unfounded", "note": "repeat request"})
    assert rej.status_code == 200 and rej.json()["reject_reason"] == "manifestly_unfounded"
    bad = client.post(f"{BASE}/{r['id']}/reject", headers=dana,
                      json={"reason_code": "not-a-reason"})
    assert bad.status_code == 422 and bad.json()["field"] == "reason_code"
    review = client.post(BASE, headers=dana, json={"kind": "automated_decision_review",
                                                   "subject_id": made["subject_id"]}).json()
    client.post(f"{BASE}/{review['id']}/verify", headers=dana,
                json={"accept_as_known": "signed_in_customer"})
    early = client.post(f"{BASE}/{review['id']}/complete", headers=dana)
    assert early.status_code == 409 and early.json()["code"] == "invalid_transition"
    waiting = client.post(f"{BASE}/{review['id']}/process", headers=dana)
    assert waiting.status_code == 200 and waiting.json()["state"] == "in_progress"
    closed = client.post(f"{BASE}/{review['id']}/complete", headers=dana,
                         json={"note": "reviewed by a person"})
    assert closed.status_code == 200 and closed.json()["state"] == "completed"

    colin = issuer.headers("colin", None)   # a compliance officer reads the report
    rep = client.get("/v1/dsar/report", headers=colin)
    assert rep.status_code == 200, rep.text
    data = rep.json()
    assert {row["request_id"] for row in data["log"]} == {r["id"], review["id"]}
    assert sum(g["closed"] for g in data["groups"]) == 2
    csv = client.get("/v1/dsar/report", headers=colin, params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("regime,kind,received")
    log = client.get("/v1/dsar/report", headers=colin, params={"format": "csv",
                                                               "table": "log"})
    assert log.text.splitlines()[0].startswith("request_id,") and r["id"] in log.text
    assert client.get("/v1/dsar/report", headers=issuer.headers("sam", None)).status_code \
        == 403


def _routes() -> list[tuple[str, str]]:
    from vault.gateway._dsar import router

    out = []
    for route in router.routes:
        assert isinstance(route, APIRoute)
        out += [(m, route.path) for m in sorted(route.methods)]
    return out


_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/dsar/requests"): {"kind": "access", "identifiers": {"email": CANARY_EMAIL}},
    ("POST", "/v1/dsar/requests/{request_id}/verify"): {"evidence": {"full_name": CANARY_NAME}},
    ("POST", "/v1/dsar/requests/{request_id}/extend"): {"reason": "complexity"},
    ("POST", "/v1/dsar/requests/{request_id}/reject"): {"reason_code": "other"},
}


def test_every_route_needs_credentials_and_the_dsar_role(client: TestClient, issuer: Issuer,
                                                         stepped_up: Callable[[str], str]
                                                         ) -> None:
    """401 without a credential and 403 (no detail) for a support agent on every
    DSAR route, with or without a second factor; nothing echoed."""
    routes = _routes()
    assert len(routes) == 11
    rid = client.post(BASE, headers=issuer.headers("dana", None), json={
        "kind": "access", "subject_id": _customer(client, issuer)["subject_id"]}).json()["id"]
    sam = issuer.headers("sam", None)
    sam_stepped = issuer.headers("sam", None, step_up=stepped_up("sam"))
    for method, path in routes:
        url = path.replace("{request_id}", rid)
        body = _BODIES.get((method, path))
        anonymous = client.request(method, url, json=body)
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        for headers in (sam, sam_stepped):
            r = client.request(method, url, json=body, headers=headers)
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            assert r.json()["code"] in ("access_denied", "step_up_required")
            _no_canary(r.text)
            assert rid not in r.text


def test_no_canary_in_errors_or_the_access_log(client: TestClient, issuer: Issuer) -> None:
    """Identifiers and evidence that are refused (unknown kind, a field that is not
    searchable, malformed values, a closed request) are never echoed: not in the
    problem bodies, not in the access log or any other log event."""
    made = _customer(client, issuer, "US-CA")
    dana = issuer.headers("dana", None)
    structlog.reset_defaults()
    with structlog.testing.capture_logs() as logs:
        answers = [
            client.post(BASE, headers=dana, json={"kind": f"x{CANARY_ID.lower()}",
                                                  "identifiers": {"email": CANARY_EMAIL}}),
            client.post(BASE, headers=dana, json={"kind": "access",
                                                  "identifiers": {"full_name": CANARY_ID}}),
            client.post(BASE, headers=dana, json={"kind": "access",
                                                  "identifiers": {"email": CANARY_NAME}}),
            client.post(BASE, headers=dana, json={"kind": "access",
                                                  "identifiers": {"email": CANARY_EMAIL},
                                                  "agent": CANARY_EMAIL}),
            client.post(BASE, headers=dana, json={"kind": "access",
                                                  "subject_id": CANARY_ID}),
            client.post(BASE, headers=dana, json={"kind": "access", "email": CANARY_EMAIL}),
            client.get(f"{BASE}/{CANARY_ID}", headers=dana),
            client.post(f"{BASE}/{CANARY_ID}/verify", headers=dana,
                        json={"evidence": {"full_name": CANARY_NAME}}),
        ]
        req = client.post(BASE, headers=dana, json={
            "kind": "know", "subject_id": made["subject_id"]}).json()
        answers += [
            client.post(f"{BASE}/{req['id']}/verify", headers=dana,
                        json={"evidence": {"full_name": CANARY_NAME,
                                           "email": CANARY_EMAIL}}),
            client.post(f"{BASE}/{req['id']}/reject", headers=dana,
                        json={"reason_code": "other", "note": f"mail {CANARY_EMAIL}"}),
            client.post(f"{BASE}/{req['id']}/complete", headers=dana,
                        json={"note": CANARY_NAME}),
        ]
    statuses = [a.status_code for a in answers]
    assert all(s >= 400 for s in statuses[:8]), statuses
    assert statuses[8] == 200   # two matching data points verify a CCPA request to know
    assert statuses[9:] == [422, 409], statuses
    for a in answers:
        _no_canary(a.text)
    assert any(e["event"] == "http_request" for e in logs)
    assert {e.get("route") for e in logs if e["event"] == "http_request"} >= {
        "/v1/dsar/requests", "/v1/dsar/requests/{request_id}/verify"}
    _no_canary(repr(logs))


def test_instants_far_from_now_are_malformed(client: TestClient, issuer: Issuer) -> None:
    """A time the regime's zone cannot hold (year 1 at +14:00), or before 1970 or after
    2999, is a 422 naming the field, never a 500; a naive time is malformed too."""
    made = _customer(client, issuer, "US-CA")
    dana = issuer.headers("dana", None)
    rid = client.post(BASE, headers=dana, json={"kind": "know",
                                                "subject_id": made["subject_id"]}).json()["id"]
    for when in ("0001-01-01T00:00:00+14:00", "1969-12-31T23:59:59Z",
                 "9999-12-31T23:59:59-12:00", "2026-01-01T00:00:00"):
        for url, body, field in (
                (BASE, {"kind": "access", "received_at": when, "received_reason": "letter"},
                 "received_at"),
                (f"{BASE}/{rid}/acknowledge", {"at": when}, "at"),
                (f"{BASE}/{rid}/extend", {"reason": "complexity", "notified_at": when},
                 "notified_at")):
            r = client.post(url, headers=dana, json=body)
            assert r.status_code == 422 and r.json()["field"] == field, (url, when, r.text)
        rep = client.get("/v1/dsar/report", headers=dana, params={"since": when})
        assert rep.status_code == 422 and rep.json()["field"] == "since"


def test_moves_are_audited_with_the_credential_and_request_id(client: TestClient,
                                                              issuer: Issuer,
                                                              vault: Vault) -> None:
    """The library audits each move; through the gateway its entry carries the
    request id and the credential (an API key's id, a JWT's digest), and a
    service's X-On-Behalf-Of."""
    from sqlalchemy import select

    from vault.store.tables import AUDIT_LOG

    made = _customer(client, issuer)
    key, secret = vault.identity.create_key("crm-intake", actor_id="crm", tenant="acme")
    sub = client.post(BASE, json={"kind": "access", "identifiers": {"email": CANARY_EMAIL}},
                      headers={"Authorization": f"Bearer {secret}",
                               "X-Request-ID": "dsar-submit-01", "X-On-Behalf-Of": "agent-7"})
    assert sub.status_code == 201, sub.text
    assert sub.json()["subject_id"] == made["subject_id"]
    v = client.post(f"{BASE}/{sub.json()['id']}/verify",
                    json={"evidence": {"full_name": CANARY_NAME}},
                    headers={**issuer.headers("dana", None, jti="dpo-tok"),
                             "X-Request-ID": "dsar-verify-01"})
    assert v.status_code == 200, v.text
    with vault.engine.connect() as conn:
        rows = {rid: conn.execute(select(AUDIT_LOG.c.action, AUDIT_LOG.c.actor,
                                         AUDIT_LOG.c.context, AUDIT_LOG.c.record_ids).where(
            AUDIT_LOG.c.request_id == rid)).all() for rid in ("dsar-submit-01",
                                                             "dsar-verify-01")}
    submitted = [r for r in rows["dsar-submit-01"] if r.action == "dsar.submit"]
    assert submitted and submitted[0].actor == "crm"
    context = json.loads(submitted[0].context)
    assert context["credential_id"] == f"key:{key.id}" and context["on_behalf_of"] == "agent-7"
    verified = [r for r in rows["dsar-verify-01"] if r.action == "dsar.verify"]
    assert verified and verified[0].actor == "dana"
    assert json.loads(verified[0].context)["credential_id"].startswith("jwt:")
    assert sub.json()["id"] in verified[0].record_ids
    _no_canary(repr(rows))


def test_export_download_refuses_what_is_not_the_bundle(client: TestClient, issuer: Issuer,
                                                        vault: Vault,
                                                        stepped_up: Callable[[str], str]
                                                        ) -> None:
    """A link planted in the bundle's folder is not followed (409); a bundle no longer
    on this host is 404; a request without an export is 404."""
    made = _customer(client, issuer)
    dana = issuer.headers("dana", None, step_up=stepped_up("dana"))
    rid = client.post(BASE, headers=dana, json={"kind": "access",
                                                "subject_id": made["subject_id"]}).json()["id"]
    assert client.get(f"{BASE}/{rid}/export", headers=dana).status_code == 404
    client.post(f"{BASE}/{rid}/verify", headers=dana,
                json={"accept_as_known": "signed_in_customer"})
    assert client.post(f"{BASE}/{rid}/process", headers=dana).status_code == 200
    folder = vault.settings.home / "dsar-exports" / "acme" / f"dsar-{rid}"
    assert folder.is_dir()
    (folder / "extra.json").symlink_to(vault.settings.resolved_key_file)
    damaged = client.get(f"{BASE}/{rid}/export", headers=dana)
    assert damaged.status_code == 409 and damaged.json()["code"] == "export_damaged"
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    gone = client.get(f"{BASE}/{rid}/export", headers=dana)
    assert gone.status_code == 404 and gone.json()["code"] == "export_not_found"


def test_rectification_takes_its_values_in_the_body(client: TestClient, issuer: Issuer) -> None:
    """A rectification's new values travel in the body of process, go through the
    data path, and the answer names the record and fields only."""
    made = _customer(client, issuer)
    dana = issuer.headers("dana", None)
    rid = client.post(BASE, headers=dana, json={"kind": "rectification",
                                                "subject_id": made["subject_id"]}).json()["id"]
    client.post(f"{BASE}/{rid}/verify", headers=dana,
                json={"accept_as_known": "signed_in_customer"})
    new_mail = "zq7x.corrected@example.com"
    done = client.post(f"{BASE}/{rid}/process", headers=dana,
                       json={"changes": {made["id"]: {"email": new_mail}}})
    assert done.status_code == 200, done.text
    assert done.json()["result"]["rectified"] == {made["id"]: ["email"]}
    assert new_mail not in done.text
    rec = client.get(f"/v1/collections/customers/records/{made['id']}",
                     headers=issuer.headers("crm")).json()
    assert rec["data"]["email"] == new_mail
