"""What CRM developers use today, on the same columns and the same data.

- :class:`PlainPeer`: an ordinary SQLAlchemy model with the 8 fields as plain
  columns (the 2 searchable ones indexed), written through the ORM or Core,
  with the validation a careful CRM does anyway: e-mail and phone checked and
  normalised by the same libraries Vault uses (email-validator, phonenumbers).
- :class:`EncryptedTypePeer`: the same model with every field a
  sqlalchemy-utils ``StringEncryptedType(..., AesGcmEngine)`` column: one
  application-wide key, no per-customer keys, no row binding, no search, no
  audit, no access control.

Both use Vault's own engine factory, so SQLite gets the same WAL and locking
settings as Vault's data database, and the run gives them Vault's
``sqlite_synchronous`` (``--sqlite-synchronous``).
"""

from __future__ import annotations

import datetime as dt
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

import phonenumbers
from email_validator import validate_email
from sqlalchemy import DateTime, Engine, Index, MetaData, String, Table, Text, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.data import FIELDS

__all__ = ["EncryptedTypePeer", "PlainPeer", "crm_validate"]

_E164 = phonenumbers.PhoneNumberFormat.E164
_CHUNK = 500


def crm_validate(person: dict[str, str]) -> dict[str, str]:
    """What a careful CRM checks before an insert: e-mail and phone, normalised."""
    out = dict(person)
    out["email"] = validate_email(person["email"], check_deliverability=False).normalized
    number = phonenumbers.parse(person["phone"], person.get("country"))
    if not phonenumbers.is_valid_number(number):
        raise ValueError("invalid phone number")
    out["phone"] = phonenumbers.format_number(number, _E164)
    return out


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Peer:
    model: Any
    table: Table

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.table.metadata.create_all(engine)

    # -- batched --------------------------------------------------------------

    def orm_insert(self, people: Sequence[dict[str, str]]) -> list[str]:
        """Validate, then add_all + commit: the everyday ORM bulk path."""
        now = _now()
        objs = [self.model(id=_new_id(), created_at=now, updated_at=now, **crm_validate(p))
                for p in people]
        ids = [o.id for o in objs]
        with Session(self.engine) as session, session.begin():
            session.add_all(objs)
        return ids

    def core_insert(self, people: Sequence[dict[str, str]]) -> list[str]:
        """Validate, then one Core executemany."""
        now = _now()
        rows = [{"id": _new_id(), "created_at": now, "updated_at": now, **crm_validate(p)}
                for p in people]
        with self.engine.begin() as conn:
            conn.execute(insert(self.table), rows)
        return [r["id"] for r in rows]

    def orm_read(self, ids: Sequence[str],
                 fields: Sequence[str] = FIELDS) -> list[dict[str, str]]:
        """Load the rows by id through the ORM and hand ``fields`` out as dicts."""
        model = self.model
        out: dict[str, dict[str, str]] = {}
        with Session(self.engine) as session:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                for obj in session.scalars(select(model).where(model.id.in_(chunk))):
                    out[obj.id] = {name: getattr(obj, name) for name in fields}
        return [out[i] for i in ids]

    def core_read(self, ids: Sequence[str]) -> list[dict[str, str]]:
        cols = [self.table.c.id, *(self.table.c[name] for name in FIELDS)]
        out: dict[str, dict[str, str]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                for row in conn.execute(select(*cols).where(self.table.c.id.in_(chunk))):
                    out[row[0]] = dict(zip(FIELDS, row[1:], strict=True))
        return [out[i] for i in ids]

    # -- single rows ------------------------------------------------------------

    def put_one(self, person: dict[str, str]) -> str:
        now = _now()
        record_id = _new_id()
        obj = self.model(id=record_id, created_at=now, updated_at=now, **crm_validate(person))
        with Session(self.engine) as session, session.begin():
            session.add(obj)
        return record_id

    def get_one(self, record_id: str) -> dict[str, str]:
        with Session(self.engine) as session, session.begin():
            obj = session.get(self.model, record_id)
            return {name: getattr(obj, name) for name in FIELDS}

    def get_one_logged(self, record_id: str, actor: str) -> dict[str, str]:
        """The physical floor of an audited read: the plain select and a one-row
        insert into an access log, committed (the fsync Vault's audit entry costs)."""
        with Session(self.engine) as session, session.begin():
            obj = session.get(self.model, record_id)
            session.add(PlainAccess(record_id=record_id, actor=actor, at=_now()))
            return {name: getattr(obj, name) for name in FIELDS}

    def find_email(self, email: str) -> list[str]:
        with Session(self.engine) as session:
            return list(session.scalars(select(self.model.id).where(self.model.email == email)))


# -- plain columns ---------------------------------------------------------------------


class _PlainBase(DeclarativeBase):
    metadata = MetaData()


class PlainCustomer(_PlainBase):
    __tablename__ = "crm_customers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    full_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    phone: Mapped[str] = mapped_column(String(32))
    postal_address: Mapped[str] = mapped_column(String(500))
    birth_date: Mapped[str] = mapped_column(String(10))
    country: Mapped[str] = mapped_column(String(2))
    preferred_language: Mapped[str | None] = mapped_column(String(35))
    support_notes: Mapped[str] = mapped_column(Text)
    # The shapes' sensitive field (bench/shapes.py), indexed as Vault blind-indexes it.
    national_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_crm_customers_email", "email"),
        Index("ix_crm_customers_national_id", "national_id"),
        Index("ix_crm_customers_phone", "phone"),
    )


class PlainAccess(_PlainBase):
    """A plain access log: one row per read (what the floor of an audited read writes)."""

    __tablename__ = "crm_access_log"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class PlainPeer(_Peer):
    """Unencrypted columns, ORM or Core, with the careful CRM's validation."""

    model = PlainCustomer
    table = PlainCustomer.__table__  # type: ignore[assignment]


# -- sqlalchemy-utils StringEncryptedType ------------------------------------------------

_KEY = "bench-application-wide-secret-key"


def _encrypted_model() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sqlalchemy_utils import StringEncryptedType
        from sqlalchemy_utils.types.encrypted.encrypted_type import AesGcmEngine

    def enc(length: int | None) -> Any:
        return StringEncryptedType(String(length) if length else Text, _KEY, AesGcmEngine)

    class _EncBase(DeclarativeBase):
        metadata = MetaData()

    class EncryptedCustomer(_EncBase):
        __tablename__ = "crm_customers_enc"

        id: Mapped[str] = mapped_column(String(32), primary_key=True)
        full_name: Mapped[str] = mapped_column(enc(None))
        email: Mapped[str] = mapped_column(enc(None))
        phone: Mapped[str] = mapped_column(enc(None))
        postal_address: Mapped[str] = mapped_column(enc(None))
        birth_date: Mapped[str] = mapped_column(enc(None))
        country: Mapped[str] = mapped_column(enc(None))
        preferred_language: Mapped[str] = mapped_column(enc(None))
        support_notes: Mapped[str] = mapped_column(enc(None))
        created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
        updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    return EncryptedCustomer


class EncryptedTypePeer(_Peer):
    """sqlalchemy-utils ``StringEncryptedType(..., AesGcmEngine)`` on the same columns."""

    def __init__(self, engine: Engine) -> None:
        self.model = _encrypted_model()
        self.table = self.model.__table__
        super().__init__(engine)
