"""The declarative base and column types shared by every table."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, MetaData, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, mapped_column

__all__ = ["Base", "KeyStoreBase", "UTCDateTime", "bigint_pk", "str64", "str128", "str255"]


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that refuses naive datetimes and always comes back in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    # The last conversion: a batch insert binds the same timestamp object to
    # every row, and datetimes are immutable, so the identity check is exact.
    _last: tuple[object, str, Any] = (None, "", None)

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        last = self._last
        if last[0] is value and last[1] == dialect.name:
            return last[2]
        if value.tzinfo is None:
            raise ValueError("naive datetime refused; use an aware UTC datetime")
        converted = value if value.tzinfo is dt.UTC else value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            converted = converted.replace(tzinfo=None)
        self._last = (value, dialect.name, converted)
        return converted

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        stamp: dt.datetime = value
        if stamp.tzinfo is None:
            return stamp.replace(tzinfo=dt.UTC)
        return stamp.astimezone(dt.UTC)


# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (autoincrement)
# when the type is exactly INTEGER, hence the variant.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

bigint_pk = Annotated[int, mapped_column(BigIntPK, primary_key=True, autoincrement=True)]
str64 = Annotated[str, mapped_column(String(64))]
str128 = Annotated[str, mapped_column(String(128))]
str255 = Annotated[str, mapped_column(String(255))]

_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# The column types of Python annotations, the same in both databases.
_TYPE_MAP: dict[Any, Any] = {
    dt.datetime: UTCDateTime(),
    bytes: LargeBinary(),
    int: BigInteger().with_variant(Integer(), "sqlite"),
}


class Base(DeclarativeBase):
    """Tables of the data database."""

    metadata = MetaData(naming_convention=_NAMING)
    type_annotation_map = _TYPE_MAP


class KeyStoreBase(DeclarativeBase):
    """Tables of the key store, a database kept apart from the data."""

    metadata = MetaData(naming_convention=_NAMING)
    type_annotation_map = _TYPE_MAP
