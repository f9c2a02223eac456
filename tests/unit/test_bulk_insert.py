"""vault.store.bulk.BulkInsert writes exactly what Connection.execute(insert(...)) writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    insert,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from tests.conftest import PgSchemas
from vault.store.base import UTCDateTime
from vault.store.bulk import BulkInsert
from vault.store.engine import make_engine

COLUMNS = ("id", "name", "blob", "at", "maybe_at", "count", "flag")


def _table(metadata: MetaData, name: str) -> Table:
    return Table(
        name, metadata,
        Column("id", String(64), primary_key=True),
        Column("name", String(128)),
        Column("blob", LargeBinary),
        Column("at", UTCDateTime()),
        Column("maybe_at", UTCDateTime(), nullable=True),
        Column("count", Integer),
        Column("flag", Boolean),
    )


def _rows() -> list[tuple[Any, ...]]:
    now = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)  # microsecond 0: formatting edge
    other = dt.datetime(2026, 5, 1, 14, 30, 1, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    rows = []
    for n in range(1200):  # several runs of shared and of distinct values per column
        at = now if n % 7 else other
        rows.append((f"r{n:05d}", "acme" if n % 3 else f"tenant-{n}", bytes([n % 256]) * (n % 5),
                     at, None if n % 2 else at + dt.timedelta(days=n), n, bool(n % 2)))
    return rows


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'bulk.db'}")
    else:
        schemas: PgSchemas = request.getfixturevalue("pg_schemas")
        eng = make_engine(schemas.url(schemas.names[0]))
    yield eng
    eng.dispose()


def _stored(engine: Engine, table: str) -> list[tuple[Any, ...]]:
    # The raw stored values (SQLite keeps datetimes as text): compared as written.
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            f"SELECT id, name, blob, at, maybe_at, count, flag FROM {table} ORDER BY id")]


def test_same_stored_values_as_connection_execute(engine: Engine) -> None:
    metadata = MetaData()
    core, bulk = _table(metadata, "via_core"), _table(metadata, "via_bulk")
    metadata.create_all(engine)
    rows = _rows()
    with engine.begin() as conn:
        conn.execute(insert(core), [dict(zip(COLUMNS, r, strict=True)) for r in rows])
        BulkInsert(bulk, COLUMNS).execute(conn, rows)
    stored = _stored(engine, "via_bulk")
    assert len(stored) == len(rows)
    assert stored == _stored(engine, "via_core")


def test_columns_in_any_order_and_a_subset(engine: Engine) -> None:
    metadata = MetaData()
    core, bulk = _table(metadata, "sub_core"), _table(metadata, "sub_bulk")
    metadata.create_all(engine)
    names = ("count", "id", "at")
    rows = [(r[5], r[0], r[3]) for r in _rows()]
    with engine.begin() as conn:
        conn.execute(insert(core), [dict(zip(names, r, strict=True)) for r in rows])
        BulkInsert(bulk, names).execute(conn, rows)
    assert _stored(engine, "sub_bulk") == _stored(engine, "sub_core")


def test_a_refused_value_is_an_sqlalchemy_error_without_the_value(engine: Engine) -> None:
    """A naive datetime is refused by UTCDateTime, as through Connection.execute, and
    nothing of the batch is written."""
    metadata = MetaData()
    table = _table(metadata, "refused")
    metadata.create_all(engine)
    rows = _rows()[:3]
    naive = dt.datetime(2026, 5, 1, 12, 0, 0)
    rows.append(("zzcanary-id", "zzcanary", b"", naive, None, 1, True))
    with pytest.raises(SQLAlchemyError) as info, engine.begin() as conn:
        BulkInsert(table, COLUMNS).execute(conn, rows)
    assert isinstance(info.value, StatementError)
    assert "zzcanary" not in str(info.value)
    assert _stored(engine, "refused") == []


def test_a_constraint_violation_rolls_back_the_batch(engine: Engine) -> None:
    metadata = MetaData()
    table = _table(metadata, "dupes")
    metadata.create_all(engine)
    rows = _rows()[:5]
    with pytest.raises(SQLAlchemyError), engine.begin() as conn:
        BulkInsert(table, COLUMNS).execute(conn, [*rows, rows[2]])
    assert _stored(engine, "dupes") == []


def test_unknown_column_refused_at_construction() -> None:
    table = _table(MetaData(), "t")
    with pytest.raises(ValueError, match="no column"):
        BulkInsert(table, ("id", "nope"))


def test_no_rows_is_a_no_op(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    metadata = MetaData()
    table = _table(metadata, "empty")
    metadata.create_all(engine)
    with engine.begin() as conn:
        BulkInsert(table, COLUMNS).execute(conn, [])
    assert _stored(engine, "empty") == []
    engine.dispose()



@pytest.mark.postgres
def test_postgres_copy_refusal_is_the_inserts_dbapi_error_without_the_value(
        pg_schemas: PgSchemas) -> None:
    """On PostgreSQL the rows are streamed with COPY, whose errors quote the refused
    row; the error raised is the DBAPIError an INSERT raises (same SQLSTATE, so the
    retry and error mapping see it), without the value."""
    engine = make_engine(pg_schemas.url(pg_schemas.names[0]))
    metadata = MetaData()
    table = _table(metadata, "too_long")
    metadata.create_all(engine)
    rows = _rows()[:3]
    rows.append(("zzcanary-id", "zzcanary" * 40, b"", rows[0][3], None, 1, True))
    with pytest.raises(DBAPIError) as info, engine.begin() as conn:
        BulkInsert(table, COLUMNS).execute(conn, rows)
    assert "zzcanary" not in str(info.value)
    assert getattr(info.value.orig, "sqlstate", None) == "22001"  # string too long
    with pytest.raises(IntegrityError) as dupe, engine.begin() as conn:
        BulkInsert(table, COLUMNS).execute(conn, [*rows[:2], rows[1]])
    assert getattr(dupe.value.orig, "sqlstate", None) == "23505"
    assert _stored(engine, "too_long") == []
    engine.dispose()


@pytest.mark.postgres
def test_postgres_copy_runs_in_the_callers_transaction(pg_schemas: PgSchemas) -> None:
    engine = make_engine(pg_schemas.url(pg_schemas.names[0]))
    metadata = MetaData()
    table = _table(metadata, "copied")
    metadata.create_all(engine)
    with engine.connect() as conn:
        conn.begin()
        BulkInsert(table, COLUMNS).execute(conn, _rows())
        inside = conn.exec_driver_sql("SELECT count(*) FROM copied").scalar()
        conn.rollback()
    assert inside == 1200
    assert _stored(engine, "copied") == []
    engine.dispose()
