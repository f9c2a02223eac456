"""A Casbin persistence adapter on the ``casbin_rule`` table.

Every change also increments ``policy_state.version`` in the same
transaction, which is how other processes learn that their loaded policy is
stale (see :class:`vault.policy.engine.CasbinPolicyEngine`). The version row
is updated first, so on PostgreSQL its row lock serialises concurrent policy
writers; on SQLite every transaction starts with ``BEGIN IMMEDIATE``.

Only :mod:`vault.policy.engine` uses this module: nothing else in Vault talks
to Casbin.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from casbin.persist.batch_adapter import BatchAdapter
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from vault.clock import Clock
from vault.policy.tables import POLICY_STATE_ID, CasbinRule, PolicyState

__all__ = ["SQLAlchemyCasbinAdapter"]

_VALUE_COLUMNS = (
    CasbinRule.v0,
    CasbinRule.v1,
    CasbinRule.v2,
    CasbinRule.v3,
    CasbinRule.v4,
    CasbinRule.v5,
)
_MAX_VALUES = len(_VALUE_COLUMNS)
_MAX_LENGTH = 255


class _NoChange(Exception):
    """Raised inside a write transaction to roll it back (nothing to change)."""


class SQLAlchemyCasbinAdapter(BatchAdapter):  # type: ignore[misc]  # casbin is untyped
    """Stores Casbin rules in ``casbin_rule`` through a SQLAlchemy engine.

    A ``casbin.persist.Adapter`` (through ``BatchAdapter``), as Casbin requires.

    Attributes:
        loaded_version: the ``policy_state.version`` read in the same
            transaction as the rules by the last :meth:`load_policy`.
        written_version: the version the last successful change produced,
            or None if the last write attempt changed nothing.

    The adapter keeps no connection open between calls, and is not
    thread-safe on its own: the engine serialises calls under its lock.
    """

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self.loaded_version: int = 0
        self.written_version: int | None = None

    # -- reading -------------------------------------------------------------

    def read_version(self) -> int:
        """Return the stored policy version (0 before the first change)."""
        with self._engine.connect() as conn:
            return _version(conn)

    def load_policy(self, model: Any) -> None:
        """Load every rule into ``model`` and remember the version it had."""
        with self._engine.connect() as conn:
            version = _version(conn)
            rows = conn.execute(
                select(CasbinRule.ptype, *_VALUE_COLUMNS).order_by(CasbinRule.id)
            ).all()
        for row in rows:
            ptype = row[0]
            values = _trim([value or "" for value in row[1:]])
            sections = model.model.get(ptype[:1]) if ptype else None
            if sections is None or ptype not in sections:
                continue
            sections[ptype].policy.append(values)
        self.loaded_version = version

    def count_rules(self, ptype: str) -> int:
        """Number of stored rules of ``ptype``."""
        with self._engine.connect() as conn:
            count = conn.execute(
                select(func.count()).select_from(CasbinRule).where(CasbinRule.ptype == ptype)
            ).scalar_one()
        return int(count)

    # -- writing -------------------------------------------------------------

    def save_policy(self, model: Any) -> bool:
        """Replace every stored rule with the rules of ``model``."""
        rows: list[dict[str, str]] = []
        for sec in ("p", "g"):
            for ptype, assertion in (model.model.get(sec) or {}).items():
                rows.extend(_row(ptype, rule) for rule in assertion.policy)
        with self._write() as conn:
            conn.execute(delete(CasbinRule))
            if rows:
                conn.execute(insert(CasbinRule), rows)
        return True

    def add_policy(self, sec: str, ptype: str, rule: Sequence[str]) -> bool:
        """Store one rule; False (and no version change) if it is stored already."""
        return self.add_policies(sec, ptype, [rule])

    def add_policies(self, sec: str, ptype: str, rules: Iterable[Sequence[str]]) -> bool:
        """Store rules not stored yet; False if every one of them was."""
        rows = [_row(ptype, rule) for rule in rules]

        def store(conn: Connection) -> bool:
            fresh = [row for row in _unique(rows) if not _exists(conn, row)]
            if fresh:
                conn.execute(insert(CasbinRule), fresh)
            return bool(fresh)

        return self._write_if_changed(store)

    def remove_policy(self, sec: str, ptype: str, rule: Sequence[str]) -> bool:
        """Delete one rule; False (and no version change) if it was not stored."""
        return self.remove_policies(sec, ptype, [rule])

    def remove_policies(self, sec: str, ptype: str, rules: Iterable[Sequence[str]]) -> bool:
        """Delete rules; False if none of them was stored."""
        rows = [_row(ptype, rule) for rule in rules]

        def remove(conn: Connection) -> bool:
            removed = 0
            for row in rows:
                removed += conn.execute(delete(CasbinRule).where(_match(row))).rowcount
            return removed != 0

        return self._write_if_changed(remove)

    def remove_filtered_policy(
        self, sec: str, ptype: str, field_index: int, *field_values: str
    ) -> bool:
        """Delete the rules whose values from ``field_index`` on match (``""`` = any)."""
        if not 0 <= field_index < _MAX_VALUES or field_index + len(field_values) > _MAX_VALUES:
            return False
        conditions: list[ColumnElement[bool]] = [CasbinRule.ptype == ptype]
        for offset, value in enumerate(field_values):
            if value:
                conditions.append(_VALUE_COLUMNS[field_index + offset] == value)
        return self._write_if_changed(
            lambda conn: conn.execute(delete(CasbinRule).where(and_(*conditions))).rowcount != 0)

    def replace_rules(
        self,
        rules: Sequence[tuple[str, Sequence[str]]],
        *,
        replace_ptypes: Iterable[str] = (),
        only_if_none_of: str | None = None,
    ) -> int:
        """Delete every rule of ``replace_ptypes`` and store ``rules``, in one transaction.

        Args:
            rules: ``(ptype, values)`` pairs; those already stored are skipped.
            replace_ptypes: the rule types to delete first (e.g. ``("p",)``).
            only_if_none_of: write nothing if a rule of this type is stored
                (checked inside the transaction, so two processes importing
                the defaults at once cannot both do it).

        Returns:
            The number of rules inserted (0 leaves the version unchanged).
        """
        rows = [_row(ptype, values) for ptype, values in rules]
        try:
            with self._write() as conn:
                if (
                    only_if_none_of is not None
                    and conn.execute(
                        select(CasbinRule.id).where(CasbinRule.ptype == only_if_none_of).limit(1)
                    ).first()
                    is not None
                ):
                    raise _NoChange
                for ptype in replace_ptypes:
                    conn.execute(delete(CasbinRule).where(CasbinRule.ptype == ptype))
                fresh = [row for row in _unique(rows) if not _exists(conn, row)]
                if fresh:
                    conn.execute(insert(CasbinRule), fresh)
                elif not replace_ptypes:
                    raise _NoChange
        except _NoChange:
            return 0
        return len(fresh)

    def _write_if_changed(self, change: Callable[[Connection], bool]) -> bool:
        """Run ``change`` in a :meth:`_write` transaction; when it reports that it
        changed nothing, roll back (the version stays) and return False."""
        try:
            with self._write() as conn:
                if not change(conn):
                    raise _NoChange
        except _NoChange:
            return False
        return True

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction that bumps the policy version before anything else."""
        self.written_version = None
        with self._engine.begin() as conn:
            version = _bump(conn, self._clock)
            yield conn
        self.written_version = version

    def ensure_state(self) -> None:
        """Create the ``policy_state`` row (version 0) if it is missing."""
        with self._engine.begin() as conn:
            _ensure_state(conn, self._clock.now())


def _version(conn: Connection) -> int:
    value = conn.execute(
        select(PolicyState.version).where(PolicyState.id == POLICY_STATE_ID)
    ).scalar_one_or_none()
    return int(value) if value is not None else 0


def _ensure_state(conn: Connection, now: dt.datetime) -> None:
    values = {"id": POLICY_STATE_ID, "version": 0, "updated_at": now}
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(pg_insert(PolicyState).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        conn.execute(sqlite_insert(PolicyState).values(**values).on_conflict_do_nothing())
    elif (
        conn.execute(select(PolicyState.id).where(PolicyState.id == POLICY_STATE_ID)).first()
        is None
    ):
        conn.execute(insert(PolicyState).values(**values))


def _bump(conn: Connection, clock: Clock) -> int:
    now = clock.now()
    statement = (
        update(PolicyState)
        .where(PolicyState.id == POLICY_STATE_ID)
        .values(version=PolicyState.version + 1, updated_at=now)
        .returning(PolicyState.version)
    )
    new = conn.execute(statement).scalar_one_or_none()
    if new is None:
        # Tables made by a migration start without the row.
        _ensure_state(conn, now)
        new = conn.execute(statement).scalar_one()
    return int(new)


def _trim(values: list[str]) -> list[str]:
    while values and values[-1] == "":
        values.pop()
    return values


def _row(ptype: str, rule: Sequence[str]) -> dict[str, str]:
    values = list(rule)
    if not ptype or len(ptype) > 8 or len(values) > _MAX_VALUES:
        raise ValueError("a Casbin rule has an invalid type or too many values")
    if any(not isinstance(v, str) or len(v) > _MAX_LENGTH for v in values):
        raise ValueError("a Casbin rule value is not a string of at most 255 characters")
    row = {"ptype": ptype}
    for index in range(_MAX_VALUES):
        row[f"v{index}"] = values[index] if index < len(values) else ""
    return row


def _unique(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[tuple[str, ...]] = set()
    unique = []
    for row in rows:
        key = tuple(row[name] for name in ("ptype", "v0", "v1", "v2", "v3", "v4", "v5"))
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def _match(row: dict[str, str]) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = [CasbinRule.ptype == row["ptype"]]
    for index, column in enumerate(_VALUE_COLUMNS):
        value = row[f"v{index}"]
        if value == "":
            conditions.append(or_(column == "", column.is_(None)))
        else:
            conditions.append(column == value)
    return and_(*conditions)


def _exists(conn: Connection, row: dict[str, str]) -> bool:
    return conn.execute(select(CasbinRule.id).where(_match(row)).limit(1)).first() is not None
