"""SQLite database files are private to their owner (issue 15, weakness 11).

``data.db``, ``keys.db`` and their ``-wal``/``-shm`` files are created 0600
whatever the umask and whoever made the home folder; ``Vault.open`` refuses a
database file that group or others may read or write, as it refuses such a key
file; ``Vault.upgrade`` tightens them instead. PostgreSQL URLs are unaffected.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from vault import Vault, VaultSettings
from vault.errors import ConfigError

from ..conftest import POLICIES, PgSchemas
from .test_data_path import CRM, customer

DB_FILES = ("data.db", "data.db-wal", "data.db-shm", "keys.db", "keys.db-wal", "keys.db-shm")


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def made_vault(settings: VaultSettings) -> Path:
    """An initialised SQLite vault in a home folder that existed before (mode 0755)."""
    home = Path(settings.home)
    home.mkdir(mode=0o755, parents=True)
    Vault.init(settings=settings).close()
    return home


def test_init_in_an_existing_folder_creates_every_database_file_0600(
        sqlite_settings: VaultSettings, umask_022: None) -> None:
    """With umask 022 and a home folder Vault did not create, every SQLite file is 0600."""
    home = Path(sqlite_settings.home)
    home.mkdir(mode=0o755, parents=True)
    assert mode(home) == 0o755
    with Vault.init(settings=sqlite_settings) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        rid = v.put(CRM, "customers", customer(1), purpose="account_management")
        present = {name: mode(home / name) for name in DB_FILES if (home / name).exists()}
        assert set(present) == set(DB_FILES), "every file should exist while the vault is open"
        assert present == dict.fromkeys(DB_FILES, 0o600)
    with Vault.open(settings=sqlite_settings) as v:  # and they open again as they are
        assert v.get(CRM, "customers", rid, purpose="account_management").data["email"]


@pytest.mark.parametrize(("name", "bad_mode"), [
    ("data.db", 0o644), ("data.db", 0o660), ("keys.db", 0o604), ("data.db-wal", 0o644),
])
def test_open_refuses_a_database_file_others_may_access(
        sqlite_settings: VaultSettings, umask_022: None, name: str, bad_mode: int) -> None:
    """A database file (or its WAL) readable or writable by group or others is refused
    with a ConfigError naming the file and the fix; the mode is left as it was."""
    home = made_vault(sqlite_settings)
    target = home / name
    target.touch()  # an empty WAL left behind is still a file others could read
    target.chmod(bad_mode)
    with pytest.raises(ConfigError) as info:
        Vault.open(settings=sqlite_settings)
    assert str(target) in info.value.message
    assert "chmod 600" in info.value.message
    assert mode(target) == bad_mode


def test_upgrade_tightens_database_files_instead_of_refusing(
        sqlite_settings: VaultSettings, umask_022: None) -> None:
    """``vault upgrade`` makes group- or world-accessible database files 0600 and opens."""
    home = made_vault(sqlite_settings)
    (home / "data.db").chmod(0o644)
    (home / "keys.db").chmod(0o666)
    Vault.upgrade(settings=sqlite_settings).close()
    assert mode(home / "data.db") == 0o600
    assert mode(home / "keys.db") == 0o600
    Vault.open(settings=sqlite_settings).close()


@pytest.mark.postgres
def test_postgres_urls_are_unaffected(pg_schemas: PgSchemas, tmp_path: Path,
                                      umask_022: None) -> None:
    """On PostgreSQL there is no database file to check: init, open and upgrade work
    in a 0755 home folder as before, and no SQLite file appears."""
    home = tmp_path / "vault"
    home.mkdir(mode=0o755)
    settings = VaultSettings.build(
        home=home, policies=POLICIES, database_url=pg_schemas.url(pg_schemas.names[0]),
        keystore_url=pg_schemas.url(pg_schemas.names[1]))
    Vault.init(settings=settings).close()
    Vault.open(settings=settings).close()
    Vault.upgrade(settings=settings).close()
    assert not any(home.glob("*.db*"))
