"""Shared fixtures: a fresh vault per test on SQLite and, where reachable, PostgreSQL.

PostgreSQL tests use ``VAULT_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``). Without a server they skip
with the reason; with ``VAULT_REQUIRE_POSTGRES=1`` (as in CI) they fail instead.
Each PostgreSQL test gets two fresh schemas (data and key store), dropped afterwards.

Key providers: a test (or module) marked ``key_providers`` runs once per provider,
the key file, a SoftHSM2 token (``pkcs11``) and moto's KMS server (``aws-kms``),
each vault with a KEK of its own (see ``tests/keyproviders.py``; skipped when
SoftHSM2 or moto is missing, failed instead with ``VAULT_REQUIRE_HSM=1`` /
``VAULT_REQUIRE_KMS=1``). ``VAULT_TEST_KEY_PROVIDERS=file,pkcs11`` narrows the
set. Every other test runs on the key file only.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from vault import Vault, VaultSettings
from vault.store.engine import make_engine

from .keyproviders import AWS_ENV, MotoKMS, SoftHSM, start_moto, start_softhsm

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"
PG_URL = os.environ.get("VAULT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("VAULT_REQUIRE_POSTGRES") == "1"

_pg_state: dict[str, str | None] = {}


def postgres_unavailable() -> str | None:
    """None if PostgreSQL answers, else why not (checked once per run)."""
    if "reason" not in _pg_state:
        try:
            engine = make_engine(PG_URL)
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _pg_state["reason"] = None
        except Exception as exc:  # any driver or network failure means "unavailable"
            _pg_state["reason"] = (
                f"PostgreSQL not reachable at VAULT_TEST_POSTGRES_URL ({type(exc).__name__}); "
                "set VAULT_TEST_POSTGRES_URL to run these tests"
            )
    return _pg_state["reason"]


def require_postgres() -> None:
    reason = postgres_unavailable()
    if reason is None:
        return
    if REQUIRE_PG:
        pytest.fail(f"{reason}; VAULT_REQUIRE_POSTGRES=1 demands it")
    pytest.skip(reason)


@dataclass
class PgSchemas:
    """Fresh PostgreSQL schemas for one test; URLs set their search_path."""

    names: list[str]

    def url(self, name: str) -> str:
        sep = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{sep}options=-csearch_path%3D{name}"


@pytest.fixture
def pg_schemas() -> Iterator[PgSchemas]:
    with fresh_pg_schemas() as schemas:
        yield schemas


@contextlib.contextmanager
def fresh_pg_schemas() -> Iterator[PgSchemas]:
    """Two fresh PostgreSQL schemas (data, keys), dropped afterwards; for fixtures of
    any scope."""
    require_postgres()
    tag = uuid.uuid4().hex[:10]
    names = [f"vt_{tag}_data", f"vt_{tag}_keys"]
    engine = make_engine(PG_URL)
    with engine.begin() as conn:
        for name in names:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        yield PgSchemas(names)
    finally:
        with engine.begin() as conn:
            for name in names:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        engine.dispose()


KEY_PROVIDERS = ("file", "pkcs11", "aws-kms")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``key_providers`` (optionally naming some) runs on each provider."""
    marker = metafunc.definition.get_closest_marker("key_providers")
    if marker is None or "key_provider_kind" not in metafunc.fixturenames:
        return
    wanted = os.environ.get("VAULT_TEST_KEY_PROVIDERS")
    kinds = [k for k in (marker.args or KEY_PROVIDERS)
             if wanted is None or k in wanted.split(",")]
    metafunc.parametrize("key_provider_kind", kinds, indirect=True)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    """One SoftHSM2 token for the session (each vault has its own KEK label in it)."""
    saved = os.environ.get("SOFTHSM2_CONF")
    yield start_softhsm(tmp_path_factory.mktemp("softhsm"))
    if saved is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = saved


@pytest.fixture(scope="session")
def moto_kms() -> Iterator[MotoKMS]:
    """moto's KMS in server mode on loopback, boto3 pointed at it, for the session."""
    saved = {name: os.environ.get(name) for name in AWS_ENV}
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def key_provider_kind(request: pytest.FixtureRequest) -> str:
    """``file`` unless the test is marked ``key_providers`` (then each in turn)."""
    return str(getattr(request, "param", "file"))


@pytest.fixture
def key_provider(request: pytest.FixtureRequest, key_provider_kind: str) -> str | None:
    """The ``key_provider`` setting of the test's vault (None: the key file)."""
    if key_provider_kind == "pkcs11":
        hsm: SoftHSM = request.getfixturevalue("softhsm")
        return hsm.uri()
    if key_provider_kind == "aws-kms":
        kms: MotoKMS = request.getfixturevalue("moto_kms")
        return kms.uri()
    return None


def _sqlite_settings(tmp_path: Path, **extra: object) -> VaultSettings:
    return VaultSettings.build(home=tmp_path / "vault", policies=POLICIES,
                               policy_refresh_seconds=0.05, **extra)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path,
             key_provider: str | None) -> VaultSettings:
    """Settings of a fresh, not yet initialised vault on each backend."""
    if request.param == "sqlite":
        return _sqlite_settings(tmp_path, key_provider=key_provider)
    schemas: PgSchemas = request.getfixturevalue("pg_schemas")
    return VaultSettings.build(
        home=tmp_path / "vault", policies=POLICIES, policy_refresh_seconds=0.05,
        database_url=schemas.url(schemas.names[0]),
        keystore_url=schemas.url(schemas.names[1]), key_provider=key_provider,
    )


@pytest.fixture
def sqlite_settings(tmp_path: Path, key_provider: str | None) -> VaultSettings:
    return _sqlite_settings(tmp_path, key_provider=key_provider)


@pytest.fixture
def vault(settings: VaultSettings) -> Iterator[Vault]:
    """An initialised vault with the demo role assignments in tenant ``acme``;
    its audit log must verify when the test ends."""
    v = Vault.init(settings=settings)
    for user, role in ROLE_USERS.items():
        v.roles.assign(user, role, tenant="acme")
    try:
        yield v
        # The whole check (chains, erasures against the key store, record versions
        # against the log), so that no test's ordinary use looks like damage.
        report = v.audit.verify()
        assert report.ok, f"audit damage after test: {report}"
    finally:
        v.close()


ROLE_USERS = {
    "crm": "crm_service",
    "sally": "sales_rep",
    "sam": "support_agent",
    "maya": "marketing",
    "andy": "analyst",
    "dana": "dpo",
    "colin": "compliance_officer",
    "ada": "admin",
}
