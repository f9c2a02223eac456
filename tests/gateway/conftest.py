"""Fixtures of the gateway tests: an identity provider (an RSA key, its JWKS file,
tokens signed with it), gateway settings that trust it, and a TestClient over the
shared ``vault`` fixture (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm

from vault import Vault
from vault.gateway import GatewaySettings, create_app

ISSUER = "https://idp.example.com"
AUDIENCE = "vault-gateway"
STEP_UP_SECRET = "s" * 48
CANARY_EMAIL = "canary.zq7x@example.com"
CANARY_NAME = "Zyxwvut Canaryson"
CANARY_ID = "AB1234567"


@dataclass
class Issuer:
    """A test identity provider."""

    key: rsa.RSAPrivateKey
    kid: str
    jwks_file: Path

    def token(self, sub: str, tenant: str | None = "acme", *, lifetime: int = 300,
              **claims: Any) -> str:
        now = int(time.time())
        body: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now,
                                "exp": now + lifetime, **claims}
        if tenant is not None:
            body.setdefault("tenant", tenant)
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": self.kid})

    def headers(self, sub: str, purpose: str | None = "account_management", *,
                step_up: str | None = None, **claims: Any) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.token(sub, **claims)}"}
        if purpose is not None:
            h["X-Purpose"] = purpose
        if step_up is not None:
            h["X-Step-Up"] = step_up
        return h


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_jwks(path: Path, key: rsa.RSAPrivateKey, kid: str) -> Path:
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": kid, "use": "sig", "alg": "RS256"})
    path.write_text(json.dumps({"keys": [public]}))
    return path


@pytest.fixture
def issuer(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Issuer:
    return Issuer(rsa_key, "k1", write_jwks(tmp_path / "jwks.json", rsa_key, "k1"))


@pytest.fixture
def gateway_settings(issuer: Issuer, tmp_path: Path) -> GatewaySettings:
    return GatewaySettings(jwks_file=issuer.jwks_file, jwt_issuer=ISSUER,
                           jwt_audience=AUDIENCE, step_up_secret=STEP_UP_SECRET,  # type: ignore[arg-type]
                           checkpoint_dir=tmp_path / "checkpoints",
                           # The fuzzing sends thousands of requests a minute.
                           rate_limit_per_minute=0, search_rate_limit_per_minute=0)


@pytest.fixture
def client(vault: Vault, gateway_settings: GatewaySettings) -> Iterator[TestClient]:
    with TestClient(create_app(vault, gateway_settings), raise_server_exceptions=True) as c:
        yield c


@pytest.fixture
def stepped_up(client: TestClient, issuer: Issuer) -> Callable[[str], str]:
    """A step-up token of a person who just authenticated with a second factor."""

    def make(sub: str) -> str:
        claims = {"amr": ["pwd", "otp"], "auth_time": int(time.time())}
        r = client.post("/v1/auth/step-up", json={"method": "jwt"},
                        headers=issuer.headers(sub, None, **claims))
        assert r.status_code == 200, r.text
        return str(r.json()["step_up_token"])

    return make


def customer(**extra: Any) -> dict[str, Any]:
    return {"full_name": CANARY_NAME, "email": CANARY_EMAIL, "country": "DE", **extra}
