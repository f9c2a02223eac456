"""PostgreSQL connection URLs carry libpq's TLS settings (``sslmode``,
``sslrootcert``) to the driver: a gateway on another host connects with
``sslmode=verify-full`` (docs/gateway.md)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.conftest import PG_URL, require_postgres
from vault import VaultSettings
from vault.store.engine import make_engine

pytestmark = pytest.mark.postgres


def _url(**query: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return PG_URL + sep + "&".join(f"{k}={v}" for k, v in query.items())


def test_sslmode_and_sslrootcert_reach_libpq(tmp_path: object) -> None:
    """verify-full with a root certificate that does not exist is refused by libpq
    before any query; sslmode=disable connects (the server here speaks plain TCP)."""
    require_postgres()
    url = _url(sslmode="verify-full", sslrootcert="/nonexistent/root.crt")
    VaultSettings.build(database_url=url, keystore_url=url)  # a valid setting
    engine = make_engine(url)
    with pytest.raises(OperationalError), engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    plain = make_engine(_url(sslmode="disable"))
    with plain.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    plain.dispose()
