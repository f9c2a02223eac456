"""SQLite engine settings: durable commits by default, NORMAL only when asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from vault import Vault, VaultSettings
from vault.errors import ConfigError
from vault.store.engine import make_engine

_FULL, _NORMAL = 2, 1  # PRAGMA synchronous values


def _pragmas(url: str, **kwargs: str) -> tuple[str, int, int]:
    engine = make_engine(url, **kwargs)
    try:
        with engine.connect().execution_options(sqlite_begin="none") as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
            sync = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
            secure = conn.exec_driver_sql("PRAGMA secure_delete").scalar_one()
        return str(mode), int(sync), int(secure)
    finally:
        engine.dispose()


def test_sqlite_commits_are_synced_by_default(tmp_path: Path) -> None:
    assert _pragmas(f"sqlite:///{tmp_path / 'a.db'}") == ("wal", _FULL, 1)


def test_sqlite_normal_is_an_explicit_choice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    assert _pragmas(url, sqlite_synchronous="NORMAL") == ("wal", _NORMAL, 1)
    with pytest.raises(ValueError, match="FULL or NORMAL"):
        make_engine(url, sqlite_synchronous="OFF")


def test_vault_settings_reach_both_databases(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sqlite_synchronous"):
        VaultSettings.build(home=tmp_path / "x", sqlite_synchronous="OFF")
    for choice, expected in (("FULL", _FULL), ("NORMAL", _NORMAL)):
        settings = VaultSettings.build(home=tmp_path / choice, sqlite_synchronous=choice)
        with Vault.init(settings=settings) as vault:
            for engine in (vault.engine, vault.keystore._engine):
                with engine.connect().execution_options(sqlite_begin="none") as conn:
                    assert conn.execute(text("PRAGMA synchronous")).scalar_one() == expected
    assert VaultSettings.build(home=tmp_path).sqlite_synchronous == "FULL"
