"""Engine construction for SQLite (embedded default) and PostgreSQL.

SQLite engines get WAL, a busy timeout, ``secure_delete`` (so deleted pages are
zeroed, which matters for crypto-shredding), foreign keys and
``synchronous=FULL`` (each commit is on disk before it returns, so an audit
entry survives a power loss; ``NORMAL`` is an opt-in, see :func:`make_engine`),
and take the
write lock at ``BEGIN`` (``BEGIN IMMEDIATE``) so that read-modify-write
transactions cannot deadlock on lock upgrades. Every engine hides bound
parameters from error messages, so SQL errors never print customer values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

__all__ = ["is_postgres", "is_sqlite", "make_engine", "read_only"]

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")


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
