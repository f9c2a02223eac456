"""Engine construction for SQLite (embedded default) and PostgreSQL.

SQLite engines get WAL, a busy timeout, ``secure_delete`` (so deleted pages are
zeroed, which matters for crypto-shredding), foreign keys and
``synchronous=FULL`` (each commit is on disk before it returns, so an audit
entry survives a power loss; ``NORMAL`` is an opt-in, see :func:`make_engine`),
and take the
write lock at ``BEGIN`` (``BEGIN IMMEDIATE``) so that read-modify-write
transactions cannot deadlock on lock upgrades. Every engine hides bound
parameters from error messages, so SQL errors never print customer values.

SQLite database files are private to their owner: :func:`make_engine` creates
a missing database file with mode 0600 before SQLite first opens it (SQLite
gives the ``-wal``, ``-shm`` and ``-journal`` files the database file's mode),
whatever the umask and whoever made the folder, and
:func:`check_private_files` refuses (or tightens) files that group or others
may read or write.
"""

from __future__ import annotations

import os
import stat
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from vault.errors import ConfigError

__all__ = [
    "check_private_files",
    "is_postgres",
    "is_sqlite",
    "make_engine",
    "read_only",
    "sqlite_file",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")
#: The files of one SQLite database: the database itself and its companions.
SQLITE_FILE_SUFFIXES = ("", "-wal", "-shm", "-journal")
_SHARED = stat.S_IRWXG | stat.S_IRWXO


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL; None for other databases and for
    in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if database in (None, "", ":memory:"):
        return None
    if database.startswith("file:"):  # a URI filename (``?uri=true``)
        if parsed.query.get("mode") == "memory":
            return None
        database = urllib.parse.unquote(database[len("file:"):].split("?", 1)[0])
        if database in ("", ":memory:"):
            return None
    return Path(database)


def check_private_files(url: str, *, tighten: bool = False) -> list[Path]:
    """Check that no file of an SQLite database is accessible by group or others.

    The database file and its ``-wal``, ``-shm`` and ``-journal`` companions that
    exist are checked (symbolic links are followed: the mode that matters is the
    target's). Nothing is checked for other databases, in-memory SQLite, or off
    POSIX systems.

    Args:
        url: the database's SQLAlchemy URL.
        tighten: make such files 0600 instead of refusing them (``vault upgrade``).

    Returns:
        The files whose mode was tightened (empty unless ``tighten``).

    Raises:
        ConfigError: a file is readable or writable by group or others (naming
            the files and the fix), or, with ``tighten``, cannot be changed.
    """
    path = sqlite_file(url)
    if path is None or os.name != "posix":
        return []
    unsafe: list[tuple[Path, int]] = []
    for suffix in SQLITE_FILE_SUFFIXES:
        candidate = Path(f"{path}{suffix}")
        try:
            info = candidate.stat()
        except FileNotFoundError:
            continue
        if info.st_mode & _SHARED:
            unsafe.append((candidate, stat.S_IMODE(info.st_mode)))
    if not unsafe:
        return []
    if tighten:
        for candidate, _ in unsafe:
            try:
                candidate.chmod(0o600)
            except OSError as exc:
                raise ConfigError(
                    f"database file {candidate} is accessible by group or others and "
                    f"cannot be made private ({exc.strerror}); run `chmod 600 {candidate}`"
                ) from None
        return [candidate for candidate, _ in unsafe]
    listed = ", ".join(f"{candidate} (mode {mode:o})" for candidate, mode in unsafe)
    names = " ".join(str(candidate) for candidate, _ in unsafe)
    what = "database file {} is" if len(unsafe) == 1 else "database files {} are"
    raise ConfigError(
        f"{what.format(listed)} accessible by group or others; "
        f"run `chmod 600 {names}` (or `vault upgrade`, which does it)"
    )


def _create_private(path: Path) -> None:
    """Create a missing SQLite database file with mode 0600, so that SQLite (which
    would create it with 0666 minus the umask) opens a private file and gives its
    -wal and -shm files the same mode. An existing file is left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    except FileNotFoundError:
        return  # no such folder: SQLite reports it when it first connects
    os.close(fd)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection for reading: on SQLite a deferred transaction (it takes no
    write lock), rolled back at the end on every backend."""
    with engine.connect().execution_options(sqlite_begin="deferred") as conn:
        try:
            yield conn
        finally:
            conn.rollback()


def make_engine(url: str, *, pool_size: int = 5, sqlite_synchronous: str = "FULL") -> Engine:
    """Create an engine for ``url`` with Vault's safety settings.

    Args:
        url: an SQLAlchemy URL; ``postgresql://`` is mapped to psycopg 3.
        pool_size: connection pool size for PostgreSQL.
        sqlite_synchronous: SQLite's ``synchronous`` in WAL mode. ``FULL`` (the
            default) syncs the WAL at every commit: a committed write and its
            audit entry survive an application crash, an OS crash and a power
            loss. ``NORMAL`` syncs only at checkpoints: commits are cheaper and
            still survive an application crash, but the last transactions
            before an OS crash or power loss can be lost (the database stays
            consistent; the audit chain stays whole, only shorter).

    A missing SQLite database file is created empty with mode 0600 (see the
    module docstring); use :func:`check_private_files` to check an existing one.

    Raises:
        ValueError: ``sqlite_synchronous`` is neither FULL nor NORMAL.

    Returns:
        A configured engine. No connection is opened yet.
    """
    if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError("sqlite_synchronous must be FULL or NORMAL")
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"hide_parameters": True, "future": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "isolation_level": None}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = NullPool
        elif not parsed.database.startswith("file:"):  # a URI may say read-only: leave it
            _create_private(Path(parsed.database))
        engine = create_engine(parsed, **kwargs)
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    kwargs["pool_size"] = pool_size
    kwargs["pool_pre_ping"] = True
    return create_engine(parsed, **kwargs)


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # pysqlite's own transaction handling is off (isolation_level=None);
        # we take the write lock up front so concurrent writers queue on the
        # busy timeout instead of failing with SQLITE_BUSY on lock upgrade.
        # Read-only work may ask for a deferred transaction, and maintenance
        # (checkpoints, VACUUM) for none: execution_options(sqlite_begin=...).
        mode = conn.get_execution_options().get("sqlite_begin", "immediate")
        if mode == "immediate":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif mode == "deferred":
            conn.exec_driver_sql("BEGIN")
