"""Schema steps the migrations share: tables the database itself keeps append-only.

The migrations in ``vault/store/migrations/versions`` call these so that every
append-only table (audit log, consent ledger, configuration snapshots, and any
added later) is guarded by the same triggers: on SQLite a ``RAISE(ABORT)`` before
each refused verb; on PostgreSQL a plpgsql function raising
``insufficient_privilege`` and row and TRUNCATE triggers, enabled ALWAYS so that
they fire even with ``session_replication_role = replica``.

The SQL each call emits is part of a released schema: change it only by adding a
new function, never by editing what an existing revision runs.
"""

from __future__ import annotations

from alembic import op

__all__ = ["append_only"]


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
