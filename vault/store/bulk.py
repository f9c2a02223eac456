"""Batched INSERTs with less per-row work than ``Connection.execute(insert(t), dicts)``.

A batch write of 10,000 records inserts some 60,000 rows. Through SQLAlchemy
Core each row is a dict whose every value goes through the column type's bind
processor, although most columns of a batch hold one shared value (the tenant,
the collection, the timestamp of the write). :class:`BulkInsert` takes rows as
tuples, converts each column's values with the same bind processor SQLAlchemy
uses (once per distinct value object when consecutive rows share it), and hands
them to the driver's ``executemany`` in one call, on the same connection and in
the same transaction.

Only for drivers with positional ``qmark`` parameters (SQLite's); on the others
(PostgreSQL) the rows go through ``Connection.execute`` as before, where
SQLAlchemy's multi-row ``VALUES`` batching saves round trips.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import StatementError

__all__ = ["BulkInsert"]

_Processor = Callable[[Any], Any] | None


class BulkInsert:
    """``INSERT INTO table (columns) VALUES (...)`` for many rows given as tuples."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        missing = [name for name in self.columns if name not in table.c]
        if missing:  # fail here, not at the first write
            raise ValueError(f"{table.name} has no column(s) {', '.join(missing)}")
        self._statement = insert(table)
        self._compiled: dict[tuple[str, str], tuple[str, tuple[_Processor, ...]] | None] = {}

    def _for(self, dialect: Dialect) -> tuple[str, tuple[_Processor, ...]] | None:
        key = (dialect.name, dialect.driver)
        if key in self._compiled:
            return self._compiled[key]
        plan: tuple[str, tuple[_Processor, ...]] | None = None
        if dialect.paramstyle == "qmark":
            compiled = self._statement.compile(dialect=dialect, column_keys=list(self.columns))
            if tuple(compiled.positiontup or ()) == self.columns:
                processors = tuple(
                    self.table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                    for name in self.columns)
                plan = (str(compiled), processors)
        self._compiled[key] = plan
        return plan

    def execute(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert ``rows`` (one value per column, in the order of ``columns``)."""
        if not rows:
            return
        plan = self._for(conn.dialect)
        if plan is None:
            names = self.columns
            conn.execute(self._statement, [dict(zip(names, row, strict=True)) for row in rows])
            return
        sql, processors = plan
        columns: list[Sequence[Any]] = []
        for index, process in enumerate(processors):
            values = [row[index] for row in rows]
            if process is not None:
                try:
                    values = _convert(values, process)
                except Exception as exc:
                    # As Connection.execute reports a value its type refuses (no values
                    # in the message: they can be personal data).
                    raise StatementError(
                        f"({type(exc).__name__}) a value of column {self.columns[index]} "
                        "was refused by its type", sql, None, exc) from None
            columns.append(values)
        conn.exec_driver_sql(sql, list(zip(*columns, strict=True)))


def _convert(values: list[Any], process: Callable[[Any], Any]) -> list[Any]:
    """``[process(v) for v in values]``, calling it once per run of the same object
    (bind processors are pure functions of the value, and the values immutable)."""
    out = []
    last: Any = _UNSET
    converted: Any = None
    for value in values:
        if value is not last:
            converted = process(value)
            last = value
        out.append(converted)
    return out


_UNSET = object()
