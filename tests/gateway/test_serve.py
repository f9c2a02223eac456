"""A real ``vault serve`` over a real socket: plain HTTP on loopback, HTTPS with a
certificate made for the test, and two replicas on one PostgreSQL."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import ROLE_USERS
from tests.gateway.conftest import CANARY_EMAIL, CANARY_ID, CANARY_NAME, Issuer, customer
from tests.gateway.serving import vault_serve
from vault import Vault, VaultSettings

pytestmark = pytest.mark.slow
BASE = "/v1/collections/customers/records"


@pytest.fixture
def initialised(settings: VaultSettings) -> VaultSettings:
    with Vault.init(settings=settings) as v:
        for user, role in ROLE_USERS.items():
            v.roles.assign(user, role, tenant="acme")
    return settings


def _verify_audit(settings: VaultSettings) -> None:
    with Vault.open(settings=settings) as v:
        report = v.audit_log.verify()
        assert report.ok, report


def test_vault_serve_end_to_end(initialised: VaultSettings, issuer: Issuer,
                                tmp_path: Path) -> None:
    """Create, read with a purpose, find, a problem: over a socket to `vault serve`;
    no canary in any body of an error nor in the server's log and access log."""
    with vault_serve(initialised, issuer, tmp_path / "serve.log") as served, \
            httpx.Client(base_url=served.url, timeout=30) as http:
        h = issuer.headers("crm")
        made = http.post(BASE, json={"data": customer(national_id=CANARY_ID),
                                     "jurisdiction": "DE"}, headers=h)
        assert made.status_code == 201, made.text
        rid = made.json()["id"]
        got = http.get(f"{BASE}/{rid}", headers=h)
        assert got.status_code == 200 and got.json()["data"]["email"] == CANARY_EMAIL
        assert got.headers["etag"] == '"1"' and got.headers["x-request-id"]
        assert "strict-transport-security" not in got.headers
        found = http.post(f"{BASE}/search", json={"criteria": {"email": CANARY_EMAIL}},
                          headers=h)
        assert [r["id"] for r in found.json()["items"]] == [rid]
        errors = [
            http.post(BASE, json={"data": customer(email=CANARY_NAME)}, headers=h),
            http.post(BASE, json={"data": {"full_name": CANARY_NAME, "x": CANARY_ID}},
                      headers=h),
            http.post(BASE, json={"data": CANARY_NAME}, headers=h),
            http.post(f"{BASE}/search", json={"criteria": {"national_id": CANARY_ID}},
                      headers=h),
            http.get(f"{BASE}/{rid}", headers=issuer.headers("stranger")),
            http.get(f"{BASE}/{rid}"),
        ]
        assert [e.status_code for e in errors] == [422, 422, 422, 403, 403, 401]
        for e in errors:
            assert e.headers["content-type"] == "application/problem+json"
            for canary in (CANARY_EMAIL, CANARY_NAME, CANARY_ID):
                assert canary not in e.text
        spec = http.get("/openapi.json").json()
        assert "/v1/collections/{collection}/records/search" in spec["paths"]
    log = served.log_text()
    assert '"event": "http_request"' in log  # the access log is there ...
    for canary in (CANARY_EMAIL, CANARY_NAME, CANARY_ID, CANARY_EMAIL.upper()):
        assert canary not in log  # ... and holds no value
    _verify_audit(initialised)


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vault test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


def test_vault_serve_over_tls(sqlite_settings: VaultSettings, issuer: Issuer,
                              tmp_path: Path) -> None:
    """`vault serve --tls-cert --tls-key` serves HTTPS with HSTS; the client checks the
    certificate made for it, and plain HTTP is not answered."""
    with Vault.init(settings=sqlite_settings) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
    cert, key = _certificate(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    with vault_serve(sqlite_settings, issuer, tmp_path / "tls.log", "--tls-cert", str(cert),
                     "--tls-key", str(key), verify=trust) as served:
        assert served.url.startswith("https://")
        with httpx.Client(base_url=served.url, verify=trust, timeout=30) as https:
            made = https.post(BASE, json={"data": customer()}, headers=issuer.headers("crm"))
            assert made.status_code == 201, made.text
            got = https.get(f"{BASE}/{made.json()['id']}", headers=issuer.headers("crm"))
            assert got.status_code == 200
            assert got.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises(httpx.HTTPError):
            httpx.get(served.url.replace("https://", "http://") + "/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):  # an untrusted certificate is refused
            httpx.get(served.url + "/healthz", timeout=5)


@pytest.mark.postgres
def test_two_replicas_on_one_postgresql(pg_schemas: object, issuer: Issuer,
                                        tmp_path: Path) -> None:
    """Two `vault serve` on one PostgreSQL: a write through one is read through the
    other, a role revoked through one is enforced by the other within a second, and
    the audit chains verify after concurrent load through both."""
    from tests.conftest import POLICIES, PgSchemas

    assert isinstance(pg_schemas, PgSchemas)
    settings = VaultSettings.build(
        home=tmp_path / "vault", policies=POLICIES, policy_refresh_seconds=0.05,
        database_url=pg_schemas.url(pg_schemas.names[0]),
        keystore_url=pg_schemas.url(pg_schemas.names[1]))
    with Vault.init(settings=settings) as v:
        for user, role in ROLE_USERS.items():
            v.roles.assign(user, role, tenant="acme")
    with vault_serve(settings, issuer, tmp_path / "a.log") as a, \
            vault_serve(settings, issuer, tmp_path / "b.log") as b, \
            httpx.Client(base_url=a.url, timeout=30) as one, \
            httpx.Client(base_url=b.url, timeout=30) as two:
        made = one.post(BASE, json={"data": customer()}, headers=issuer.headers("crm"))
        assert made.status_code == 201
        rid = made.json()["id"]
        assert two.get(f"{BASE}/{rid}", headers=issuer.headers("crm")).status_code == 200
        # A role revoked through one replica (the administrator steps up there) ...
        claims = {"amr": ["otp"], "auth_time": int(time.time())}
        token = one.post("/v1/auth/step-up", json={"method": "jwt"},
                         headers=issuer.headers("ada", None, **claims)).json()["step_up_token"]
        sally = issuer.headers("sally")
        assert two.get(f"{BASE}/{rid}", headers=sally).status_code == 200
        revoked = one.delete("/v1/admin/roles/sally/sales_rep",
                             headers=issuer.headers("ada", None, step_up=token))
        assert revoked.json() == {"changed": True}
        # ... is enforced by the other within one second.
        deadline = time.monotonic() + 1.0
        while two.get(f"{BASE}/{rid}", headers=sally).status_code != 403:
            assert time.monotonic() < deadline, "the other replica still lets sally read"
            time.sleep(0.05)
        # An API key revoked through one replica is refused by the other at once.
        with Vault.open(settings=settings) as v:
            key, secret = v.identity.create_key("svc", actor_id="crm", tenant="acme")
        bearer = {"Authorization": f"Bearer {secret}", "X-Purpose": "account_management"}
        assert two.get(f"{BASE}/{rid}", headers=bearer).status_code == 200
        gone = one.delete(f"/v1/admin/api-keys/{key.id}",
                          headers=issuer.headers("ada", None, step_up=token))
        assert gone.status_code == 200 and gone.json()["revoked"] is True
        deadline = time.monotonic() + 1.0
        while two.get(f"{BASE}/{rid}", headers=bearer).status_code != 401:
            assert time.monotonic() < deadline, "the other replica still takes the key"
            time.sleep(0.05)
        # Concurrent load through both, then every chain verifies.
        failures: list[int] = []

        def load(client: httpx.Client) -> None:
            for i in range(15):
                r = client.post(BASE, json={"data": customer(email=f"l{i}@example.com")},
                                headers=issuer.headers("crm"))
                got = client.get(f"{BASE}/{rid}", headers=issuer.headers("crm"))
                if r.status_code != 201 or got.status_code != 200:
                    failures.append(r.status_code)

        threads = [threading.Thread(target=load, args=(c,)) for c in (one, two, one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
    _verify_audit(settings)


def test_vault_serve_with_two_workers(sqlite_settings: VaultSettings, issuer: Issuer,
                                      tmp_path: Path) -> None:
    """`--workers 2`: each worker builds its app from the environment and serves."""
    with Vault.init(settings=sqlite_settings) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
    with vault_serve(sqlite_settings, issuer, tmp_path / "w.log", "--workers", "2") as served, \
            httpx.Client(base_url=served.url, timeout=30) as http:
        ids = [http.post(BASE, json={"data": customer()}, headers=issuer.headers("crm"))
               .json()["id"] for _ in range(6)]
        for rid in ids:
            assert http.get(f"{BASE}/{rid}", headers=issuer.headers("crm")).status_code == 200
    _verify_audit(sqlite_settings)
