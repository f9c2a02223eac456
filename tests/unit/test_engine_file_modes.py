"""SQLite files made and checked private by vault.store.engine (issue 15, weakness 11)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vault.errors import ConfigError
from vault.store.engine import check_private_files, make_engine, sqlite_file


def test_sqlite_file_of_each_kind_of_url(tmp_path: Path) -> None:
    """The database file of plain and URI SQLite URLs; none for memory or PostgreSQL."""
    assert sqlite_file(f"sqlite:///{tmp_path / 'a.db'}") == tmp_path / "a.db"
    assert sqlite_file(f"sqlite:///file:{tmp_path / 'b.db'}?mode=ro&uri=true") == (
        tmp_path / "b.db")
    assert sqlite_file("sqlite:///file:x?mode=memory&uri=true") is None
    assert sqlite_file("sqlite://") is None
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("postgresql://u:pw@localhost/db") is None


def test_make_engine_creates_a_missing_database_file_0600(tmp_path: Path) -> None:
    """Even with umask 000 the file SQLite opens, and its WAL and SHM, are 0600."""
    old = os.umask(0)
    try:
        engine = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x)")
            for suffix in ("", "-wal", "-shm"):
                made = tmp_path / f"new.db{suffix}"
                assert stat.S_IMODE(made.stat().st_mode) == 0o600, made.name
        engine.dispose()
    finally:
        os.umask(old)


def test_check_private_files_names_every_unsafe_file(tmp_path: Path) -> None:
    """Every unsafe companion file is named in one error; tighten makes them 0600."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for name, mode in (("x.db", 0o600), ("x.db-wal", 0o644), ("x.db-shm", 0o640)):
        (tmp_path / name).touch()
        (tmp_path / name).chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        check_private_files(url)
    assert str(tmp_path / "x.db-wal") in info.value.message
    assert str(tmp_path / "x.db-shm") in info.value.message
    assert f"{tmp_path / 'x.db'} " not in info.value.message
    assert check_private_files(url, tighten=True) == [tmp_path / "x.db-wal",
                                                      tmp_path / "x.db-shm"]
    assert check_private_files(url) == []
    assert check_private_files("postgresql://u@localhost/db") == []
