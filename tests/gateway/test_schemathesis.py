"""Generated requests against /openapi.json (schemathesis): at least 2,000 across
every operation, authenticated, with a canary record planted first; no 5xx, no
response echoing a canary value, and 401 everywhere without credentials.

Heavy: marked ``schemathesis`` (CI runs it; ``-m 'not schemathesis'`` skips it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase

from tests.gateway.conftest import CANARY_EMAIL, CANARY_ID, CANARY_NAME, Issuer, customer
from vault import Vault
from vault.gateway import GatewaySettings, create_app

pytestmark = [pytest.mark.schemathesis, pytest.mark.slow]

TOTAL = int(os.environ.get("VAULT_SCHEMATHESIS_REQUESTS", "2000"))
CANARIES = (CANARY_EMAIL, CANARY_NAME, CANARY_ID)
# Who calls each part of the API: the role that may use it, so that generated
# requests reach the library rather than stopping at a 403.
WHO = (("/v1/collections", "crm"), ("/v1/subjects", "dana"), ("/v1/consents", "dana"),
       ("/v1/audit", "colin"), ("/v1/admin", "ada"), ("/v1/auth", "dana"),
       ("/v1/dsar", "dana"))


@pytest.fixture
def app_client(vault: Vault, gateway_settings: GatewaySettings,
               issuer: Issuer) -> Iterator[tuple[TestClient, str, str]]:
    app = create_app(vault, gateway_settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        made = c.post("/v1/collections/customers/records",
                      json={"data": customer(national_id=CANARY_ID), "jurisdiction": "DE"},
                      headers=issuer.headers("crm"))
        assert made.status_code == 201
        yield c, made.json()["id"], made.json()["subject_id"]


def test_generated_requests(app_client: tuple[TestClient, str, str], issuer: Issuer) -> None:
    """Every operation, authenticated: no 5xx, no canary echoed; without a credential, 401."""
    client, _rid, _sid = app_client
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [r.ok() for r in schema.get_all_operations()]
    operations = [op for op in operations if op.path.startswith("/v1")]
    per_operation = max(1, TOTAL // len(operations) + 1)
    sent = {"authenticated": 0, "anonymous": 0}
    statuses: dict[int, int] = {}
    for op in operations:
        _fuzz(op, next(who for prefix, who in WHO if op.path.startswith(prefix)),
              issuer, per_operation, sent, statuses)
    assert sent["authenticated"] >= TOTAL
    # The requests reached the library, not only the validation layer.
    assert sum(n for s, n in statuses.items() if s < 300) > 0


def _fuzz(op: schemathesis.APIOperation, sub: str, issuer: Issuer, examples: int,
          sent: dict[str, int], statuses: dict[int, int]) -> None:
    @hypothesis.settings(max_examples=examples, deadline=None, database=None,
                         phases=[Phase.generate], derandomize=True,
                         suppress_health_check=list(HealthCheck))
    @hypothesis.given(case=op.as_strategy())
    def run(case: schemathesis.Case) -> None:
        headers = dict(case.headers or {})
        headers["Authorization"] = f"Bearer {issuer.token(sub)}"
        headers.setdefault("X-Purpose", "account_management")
        response = case.call(headers=headers)
        sent["authenticated"] += 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (op.path, response.status_code, response.text)
        for canary in CANARIES:
            assert canary not in response.text, (op.path, canary)
        if sent["authenticated"] % 10 == 0:
            bare = {k: v for k, v in headers.items() if k != "Authorization"}
            anonymous = case.call(headers=bare)
            sent["anonymous"] += 1
            assert anonymous.status_code in (401, 413), (op.path, anonymous.status_code)

    run()
