"""The records endpoints: create, batch, read with ETag, PATCH/DELETE with If-Match,
search with the criteria in the body, pagination, problems."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.gateway.conftest import CANARY_EMAIL, CANARY_ID, Issuer, customer
from vault import Vault

BASE = "/v1/collections/customers/records"


def test_create_answers_201_with_ids_and_get_returns_the_record(
        client: TestClient, issuer: Issuer) -> None:
    """A create answers 201 {id, subject_id}; a read answers the library's Record and its ETag."""
    r = client.post(BASE, json={"data": customer(), "subject_id": None, "jurisdiction": "DE"},
                    headers=issuer.headers("crm"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "subject_id"}
    got = client.get(f"{BASE}/{body['id']}", headers=issuer.headers("crm"))
    assert got.status_code == 200
    rec = got.json()
    assert rec["id"] == body["id"] and rec["subject_id"] == body["subject_id"]
    assert rec["data"]["email"] == CANARY_EMAIL
    assert got.headers["etag"] == '"1"'
    assert got.headers["cache-control"] == "no-store"
    assert got.headers["x-request-id"]


def test_masked_and_withheld_fields_are_listed(client: TestClient, issuer: Issuer) -> None:
    """A support agent sees the phone masked and no marketing segment."""
    rid = client.post(BASE, json={"data": customer(phone="+49 30 1234567",
                                                   marketing_segment="vip")},
                      headers=issuer.headers("crm")).json()["id"]
    rec = client.get(f"{BASE}/{rid}", headers=issuer.headers("sam", "customer_support")).json()
    assert "phone" in rec["masked"]
    assert "marketing_segment" in rec["withheld"]
    assert "marketing_segment" not in rec["data"]


def test_idempotency_key_answers_the_first_create(client: TestClient, issuer: Issuer,
                                                  vault: Vault) -> None:
    """The same Idempotency-Key and body create once; another body with it is refused."""
    h = {**issuer.headers("crm"), "Idempotency-Key": "order-42"}
    first = client.post(BASE, json={"data": customer()}, headers=h)
    again = client.post(BASE, json={"data": customer()}, headers=h)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = client.post(BASE, json={"data": customer(country="FR")}, headers=h)
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    assert CANARY_EMAIL not in other.text


def test_patch_and_delete_honour_if_match(client: TestClient, issuer: Issuer,
                                          stepped_up: Callable[[str], str]) -> None:
    """If-Match with the ETag changes; a stale one is 412 and changes nothing."""
    rid = client.post(BASE, json={"data": customer()}, headers=issuer.headers("crm")).json()["id"]
    etag = client.get(f"{BASE}/{rid}", headers=issuer.headers("crm")).headers["etag"]
    ok = client.patch(f"{BASE}/{rid}", json={"data": {"country": "FR"}},
                      headers={**issuer.headers("crm"), "If-Match": etag})
    assert ok.status_code == 204, ok.text
    stale = client.patch(f"{BASE}/{rid}", json={"data": {"country": "IT"}},
                         headers={**issuer.headers("crm"), "If-Match": etag})
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    now = client.get(f"{BASE}/{rid}", headers=issuer.headers("crm"))
    assert now.json()["data"]["country"] == "FR" and now.headers["etag"] == '"2"'
    # Deleting is an erasure: a person with a second factor (the DPO).
    token = stepped_up("dana")
    dpo = issuer.headers("dana", "dsar_fulfilment", step_up=token)
    assert client.delete(f"{BASE}/{rid}", headers={**dpo, "If-Match": etag}).status_code == 412
    assert client.delete(f"{BASE}/{rid}", headers={**dpo, "If-Match": '"2"'}).status_code == 204
    assert client.get(f"{BASE}/{rid}", headers=issuer.headers("crm")).status_code == 404


def test_batch_create_and_get(client: TestClient, issuer: Issuer) -> None:
    """A batch is stored in one transaction; batch-get keeps the order of the ids."""
    items = [{"data": customer(email=f"b{i}@example.com")} for i in range(3)]
    r = client.post(f"{BASE}/batch", json={"items": items, "jurisdiction": "DE"},
                    headers=issuer.headers("crm"))
    assert r.status_code == 201, r.text
    ids = [i["id"] for i in r.json()["items"]]
    got = client.post(f"{BASE}/batch-get", json={"ids": list(reversed(ids))},
                      headers=issuer.headers("crm"))
    assert [g["id"] for g in got.json()] == list(reversed(ids))
    assert [g["data"]["email"] for g in got.json()] == [f"b{i}@example.com" for i in (2, 1, 0)]


def test_search_pages_and_keeps_values_out_of_the_url(client: TestClient,
                                                       issuer: Issuer) -> None:
    """POST .../search finds by blind index; results come in pages."""
    for i in range(5):
        client.post(BASE, json={"data": customer(email="same@example.com", full_name=f"Same {i}")},
                    headers=issuer.headers("crm"))
    h = issuer.headers("crm")
    first = client.post(f"{BASE}/search", json={"criteria": {"email": "SAME@example.com"},
                                                "limit": 3}, headers=h)
    assert first.status_code == 200, first.text
    page = first.json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    rest = client.post(f"{BASE}/search", json={"criteria": {"email": "same@example.com"},
                                               "limit": 3, "cursor": page["next_cursor"]},
                       headers=h).json()
    assert len(rest["items"]) == 2 and rest["next_cursor"] is None
    ids = {i["id"] for i in page["items"]} | {i["id"] for i in rest["items"]}
    assert len(ids) == 5


def test_problems_never_echo_values(client: TestClient, issuer: Issuer) -> None:
    """Invalid data names the field, never the value submitted."""
    r = client.post(BASE, json={"data": customer(email="not an email " + CANARY_ID)},
                    headers=issuer.headers("crm"))
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"] == "email"
    assert CANARY_ID not in r.text
    unknown = client.post(BASE, json={"data": customer(shoe_size=CANARY_ID)},
                          headers=issuer.headers("crm"))
    assert unknown.status_code == 422 and CANARY_ID not in unknown.text
    # FastAPI's default validation body echoes input: ours does not.
    bad = client.post(BASE, json={"data": CANARY_ID}, headers=issuer.headers("crm"))
    assert bad.status_code == 422 and CANARY_ID not in bad.text
    assert bad.json()["field"] == "data"


def test_status_table(client: TestClient, issuer: Issuer) -> None:
    """404 unknown record or collection, 403 denied without detail, 400 purpose."""
    h = issuer.headers("crm")
    assert client.get(f"{BASE}/nope", headers=h).json()["code"] == "not_found"
    assert client.get("/v1/collections/nothing/records/x", headers=h).status_code == 404
    rid = client.post(BASE, json={"data": customer()}, headers=h).json()["id"]
    denied = client.get(f"{BASE}/{rid}", headers=issuer.headers("stranger"))
    assert denied.status_code == 403
    # The same answer for a record that does not exist: nothing about what exists.
    ghost = client.get(f"{BASE}/ghost", headers=issuer.headers("stranger"))
    assert ghost.status_code == 403
    assert set(denied.json()) == set(ghost.json())
    assert client.get(f"{BASE}/{rid}", headers=issuer.headers("crm", None)).status_code == 400
    unknown = client.get(f"{BASE}/{rid}", headers=issuer.headers("crm", "curiosity"))
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_purpose"


def test_sensitive_fields_need_a_second_factor(client: TestClient, issuer: Issuer,
                                               stepped_up: Callable[[str], str]) -> None:
    """Without step-up a sensitive field is left out (and named); asked for, it is 403."""
    rid = client.post(BASE, json={"data": customer(national_id=CANARY_ID)},
                      headers=issuer.headers("crm")).json()["id"]
    dpo = issuer.headers("dana", "dsar_fulfilment")
    plain = client.get(f"{BASE}/{rid}", headers=dpo).json()
    assert "national_id" not in plain["data"] and plain["step_up_fields"] == ["national_id"]
    asked = client.get(f"{BASE}/{rid}", params={"fields": "national_id"}, headers=dpo)
    assert asked.status_code == 403 and asked.json()["code"] == "step_up_required"
    strong = issuer.headers("dana", "dsar_fulfilment", step_up=stepped_up("dana"))
    assert client.get(f"{BASE}/{rid}", headers=strong).json()["data"]["national_id"] == CANARY_ID


def test_body_size_is_bounded(client: TestClient, issuer: Issuer) -> None:
    """A body over the limit is 413 before it is parsed."""
    big = {"data": {"support_notes": "x" * 2_000_000}}
    r = client.post(BASE, json=big, headers=issuer.headers("crm"))
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"


def test_no_canary_in_the_logs_of_refused_requests(client: TestClient, issuer: Issuer) -> None:
    """The gateway's log events (access log, refusals, internal errors) hold no value."""
    import structlog.testing

    # A CLI test earlier in the run may have configured a WARNING filter.
    structlog.reset_defaults()
    with structlog.testing.capture_logs() as logs:
        h = issuer.headers("crm")
        client.post(BASE, json={"data": customer(email=f"bad {CANARY_ID}")}, headers=h)
        client.post(BASE, json={"data": CANARY_ID}, headers=h)
        client.post(f"{BASE}/search", json={"criteria": {"national_id": CANARY_ID}}, headers=h)
        client.get(f"{BASE}/{CANARY_ID}", headers=issuer.headers("stranger"))
        client.get(f"{BASE}/x1?email={CANARY_EMAIL}", headers=h)
    assert any(e["event"] == "http_request" for e in logs)
    text = repr(logs)
    for canary in (CANARY_EMAIL, CANARY_ID):
        assert canary not in text


def test_an_unexpected_error_is_a_bare_500(vault: Vault, gateway_settings: object) -> None:
    """A bug's message (which may quote a value) reaches neither the body nor the log:
    a 500 problem with the request id only, and the X-Request-ID header."""
    import structlog.testing

    from vault.gateway import GatewaySettings, create_app

    assert isinstance(gateway_settings, GatewaySettings)
    app = create_app(vault, gateway_settings)

    def boom() -> None:
        raise ValueError(f"bad value {CANARY_EMAIL}")

    app.add_api_route("/boom", boom)
    structlog.reset_defaults()
    with structlog.testing.capture_logs() as logs, \
            TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"type": "https://vault.example.com/problems/internal_error",
                        "title": "Internal error", "status": 500, "code": "internal_error",
                        "request_id": r.headers["x-request-id"]}
    assert CANARY_EMAIL not in repr(logs)
    assert any(e["event"] == "gateway_internal_error" for e in logs)


def test_idempotency_holds_across_replicas_and_while_in_progress(
        vault: Vault, gateway_settings: object, issuer: Issuer) -> None:
    """Another app on the same database answers a retried create with the first answer;
    a key whose first create is still running is 409 with Retry-After."""
    from vault.gateway import GatewaySettings, create_app

    assert isinstance(gateway_settings, GatewaySettings)
    h = {**issuer.headers("crm"), "Idempotency-Key": "replica-1"}
    with TestClient(create_app(vault, gateway_settings)) as one, \
            TestClient(create_app(vault, gateway_settings)) as two:
        first = one.post(BASE, json={"data": customer()}, headers=h)
        again = two.post(BASE, json={"data": customer()}, headers=h)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        # A claim without an answer yet: the first create still runs somewhere.
        from vault.gateway._idempotency import IDEMPOTENCY, IdempotencyStore

        store = IdempotencyStore(vault.engine)
        body = {"data": customer()}
        running = {**issuer.headers("crm"), "Idempotency-Key": "replica-2"}
        made = one.post(BASE, json=body, headers={**running, "Idempotency-Key": "probe"})
        assert made.status_code == 201
        with vault.engine.begin() as conn:
            digest = conn.execute(IDEMPOTENCY.select().where(
                IDEMPOTENCY.c.idem_key == "probe")).one().request_digest
        assert store.claim("acme", "crm", "replica-2", digest, vault.clock.now()) is None
        busy = two.post(BASE, json=body, headers=running)
        assert busy.status_code == 409 and busy.headers["retry-after"] == "1"
