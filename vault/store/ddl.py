"""Schema steps the migrations share: recurring columns, and tables the database
itself keeps append-only.

The column helpers give the columns that recur across tables one definition
each (``tenant`` VARCHAR(128), ``subject_id`` VARCHAR(64), timestamps
``UTCDateTime``, auto-incrementing BIGINT keys, ...), so that a table's
migration spells out only the columns that are its own.

The migrations in ``vault/store/migrations/versions`` call :func:`append_only` so
that every append-only table (audit log, consent ledger, configuration snapshots, and any
added later) is guarded by the same triggers: on SQLite a ``RAISE(ABORT)`` before
each refused verb; on PostgreSQL a plpgsql function raising
``insufficient_privilege`` and row and TRUNCATE triggers, enabled ALWAYS so that
they fire even with ``session_replication_role = replica``.

The SQL each call emits is part of a released schema: change it only by adding a
new function, never by editing what an existing revision runs
(``tests/integration/test_migration_schema.py`` fails when a released revision
makes another schema).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from vault.store.base import BigIntPK, UTCDateTime

__all__ = [
    "BIGINT",
    "actor",
    "append_only",
    "bigints",
    "record_ref",
    "serial",
    "string_key",
    "subject",
    "subject_key",
    "tenant",
    "texts",
    "timestamp",
    "timestamps",
]

# BIGINT, but INTEGER on SQLite, where only an INTEGER PRIMARY KEY is an alias of
# the rowid (the type of the migrations' 64-bit integer columns).
BIGINT = BigIntPK


def serial(name: str = "id") -> sa.Column[Any]:
    """An auto-incrementing BIGINT primary key."""
    return sa.Column(name, BIGINT, primary_key=True, autoincrement=True)


def string_key(name: str, length: int) -> sa.Column[Any]:
    """A VARCHAR(``length``) primary key (or one column of it)."""
    return sa.Column(name, sa.String(length), primary_key=True)


def tenant(*, primary_key: bool = False) -> sa.Column[Any]:
    """``tenant``, VARCHAR(128), NOT NULL."""
    return sa.Column("tenant", sa.String(128), primary_key=primary_key, nullable=False)


def subject(*, primary_key: bool = False, nullable: bool = False) -> sa.Column[Any]:
    """``subject_id``, VARCHAR(64); NOT NULL unless ``nullable``."""
    return sa.Column("subject_id", sa.String(64), primary_key=primary_key, nullable=nullable)


def subject_key() -> tuple[sa.Column[Any], sa.Column[Any]]:
    """The primary key of a table with one row per subject: ``tenant``, ``subject_id``."""
    return tenant(primary_key=True), subject(primary_key=True)


def actor(
    name: str = "actor", *, primary_key: bool = False, nullable: bool = False
) -> sa.Column[Any]:
    """Who did or asked for something (``actor``, ``placed_by``, ...), VARCHAR(128).

    NOT NULL unless ``nullable``.
    """
    return sa.Column(name, sa.String(128), primary_key=primary_key, nullable=nullable)


def record_ref(table: str, *, primary_key: bool = False) -> sa.Column[Any]:
    """``record_id``, NOT NULL, referring to ``records.id``; the row goes with its record."""
    return sa.Column(
        "record_id",
        sa.String(64),
        sa.ForeignKey("records.id", ondelete="CASCADE", name=f"fk_{table}_record_id_records"),
        primary_key=primary_key,
        nullable=False,
    )


def timestamp(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    """A ``UTCDateTime`` column; NOT NULL unless ``nullable``."""
    return sa.Column(name, UTCDateTime(), nullable=nullable)


def timestamps(*names: str, nullable: bool = False) -> list[sa.Column[Any]]:
    """:func:`timestamp` columns, in the order named."""
    return [timestamp(name, nullable=nullable) for name in names]


def bigints(*names: str, nullable: bool = False) -> list[sa.Column[Any]]:
    """BIGINT columns (counters, versions, positions), in the order named."""
    return [sa.Column(name, BIGINT, nullable=nullable) for name in names]


def texts(*names: str) -> list[sa.Column[Any]]:
    """TEXT NOT NULL columns, in the order named."""
    return [sa.Column(name, sa.Text(), nullable=False) for name in names]


def append_only(table: str, function: str, message: str) -> None:
    """Make ``table`` refuse UPDATE, DELETE (and on PostgreSQL TRUNCATE) with ``message``.

    ``function`` names the PostgreSQL trigger function (``vault_<name>``); the
    triggers are named ``<table>_no_update``/``_no_delete`` on SQLite and
    ``<table>_no_update_delete``/``_no_truncate`` on PostgreSQL.
    """
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION '{message}' USING ERRCODE = 'insufficient_privilege'; "
            "END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {function}()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
        op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_update_delete")
        op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_truncate")
