"""Sec-GPC and rate limits: request-level rules that hold across replicas because
their state is in the database."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient

from tests.gateway.conftest import Issuer, customer
from vault import FixedClock, Vault
from vault.gateway import GatewaySettings, create_app

BASE = "/v1/collections/customers/records"


def _gpc_events(client: TestClient, issuer: Issuer, sid: str) -> list[str]:
    hist = client.get(f"/v1/subjects/{sid}/consents/history",
                      headers=issuer.headers("crm", None)).json()
    return sorted(e["purpose"] for e in hist["items"] if e["method"] == "gpc")


def test_sec_gpc_records_an_opt_out_once_per_subject(client: TestClient,
                                                     issuer: Issuer) -> None:
    """Sec-GPC: 1 on a create and on later reads records one opt-out per purpose."""
    h = {**issuer.headers("crm"), "Sec-GPC": "1"}
    made = client.post(BASE, json={"data": customer(), "jurisdiction": "US-CA"}, headers=h)
    assert made.status_code == 201, made.text
    sid, rid = made.json()["subject_id"], made.json()["id"]
    first = _gpc_events(client, issuer, sid)
    assert first == ["sale", "sharing"]
    for _ in range(3):
        assert client.get(f"{BASE}/{rid}", headers=h).status_code == 200
    assert client.get(f"/v1/subjects/{sid}", headers={**issuer.headers("crm", None),
                                                      "Sec-GPC": "1"}).status_code == 200
    assert _gpc_events(client, issuer, sid) == first


def test_no_gpc_signal_is_no_consent_event(client: TestClient, issuer: Issuer) -> None:
    """Without the header nothing is recorded (its absence is never read as consent)."""
    made = client.post(BASE, json={"data": customer(), "jurisdiction": "US-CA"},
                       headers=issuer.headers("crm")).json()
    assert _gpc_events(client, issuer, made["subject_id"]) == []


def test_rate_limits_answer_429_with_retry_after(vault: Vault,
                                                 gateway_settings: GatewaySettings,
                                                 issuer: Issuer) -> None:
    """Past the per-minute limit of a caller: 429 with Retry-After; searches stricter;
    another caller is not affected; a second app on the same database shares the count."""
    cfg = gateway_settings.model_copy(update={"rate_limit_per_minute": 5,
                                              "search_rate_limit_per_minute": 2})
    # A clock that stands still: the minute cannot roll over during the test.
    clock = FixedClock(dt.datetime.now(dt.UTC))
    with Vault.open(settings=vault.settings, clock=clock) as still, \
            TestClient(create_app(still, cfg)) as one, \
            TestClient(create_app(still, cfg)) as two:
        h = issuer.headers("crm")
        search = {"criteria": {"email": "x@example.com"}}
        assert one.post(f"{BASE}/search", json=search, headers=h).status_code == 200
        assert two.post(f"{BASE}/search", json=search, headers=h).status_code == 200
        refused = one.post(f"{BASE}/search", json=search, headers=h)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        codes = [c.get(f"{BASE}/x", headers=h).status_code for c in (one, two, one)]
        assert codes[-1] == 429 and refused.json()["code"] == "rate_limited"
        assert one.get(f"{BASE}/x", headers=issuer.headers("sally")).status_code == 404
        clock.advance(dt.timedelta(seconds=61))
        assert one.get(f"{BASE}/x", headers=h).status_code == 404
