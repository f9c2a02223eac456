"""Emptying SQLite's write-ahead log, so that bytes a transaction replaced or
deleted do not linger in the ``-wal`` file (no-op on other databases).

With ``secure_delete`` on, SQLite zeroes deleted content in the database file,
but the WAL keeps the old page images until a checkpoint copies the new ones
back and (``TRUNCATE``) empties it. A checkpoint cannot finish while another
connection reads an older snapshot: SQLite then reports "busy" in the pragma's
result row instead of raising, so the result must be checked.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine

from vault.logging import get_logger

__all__ = ["truncate_wal"]

log = get_logger(__name__)


def truncate_wal(engine: Engine, *, attempts: int = 5, wait: float = 0.02) -> bool:
    """Checkpoint and truncate the WAL of ``engine``'s SQLite database.

    Tries ``attempts`` times, waiting a little longer each time, while readers
    hold older snapshots.

    Returns:
        True when the WAL was emptied (always on PostgreSQL), False when readers
        kept it busy every time (the next checkpoint empties it).
    """
    if engine.dialect.name != "sqlite":
        return True
    for attempt in range(attempts):
        with engine.connect().execution_options(sqlite_begin="none") as conn:
            busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
        if not busy:
            return True
        time.sleep(wait * (attempt + 1))
    log.warning("wal_checkpoint_busy", attempts=attempts)
    return False
