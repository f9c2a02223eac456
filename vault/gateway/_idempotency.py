"""``Idempotency-Key`` on creates, remembered in the data database so that every
replica answers a retried create with the first answer.

A row holds the caller, the key, a keyed digest of the request (so a key reused
with another body is refused; the digest is keyed so that it is no dictionary
for guessing a body) and, once done, the ids created: never a value.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from vault.store.base import UTCDateTime

__all__ = ["IDEMPOTENCY", "IdempotencyStore", "Remembered"]

_META = MetaData()
#: Created by migration 0010 of the data database.
IDEMPOTENCY = Table(
    "gateway_idempotency", _META,
    Column("tenant", String(128), primary_key=True),
    Column("actor", String(128), primary_key=True),
    Column("idem_key", String(128), primary_key=True),
    Column("request_digest", String(64), nullable=False),
    Column("status", Integer, nullable=False),  # 0 while the create runs
    Column("response", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
)


@dataclass(frozen=True, slots=True)
class Remembered:
    """What a key already stands for: ``status`` 0 while the first create runs."""

    request_digest: str
    status: int
    response: Any


class IdempotencyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def claim(self, tenant: str, actor: str, key: str, digest: str,
              now: dt.datetime) -> Remembered | None:
        """Claim ``key`` for a new create (None), or what it already stands for."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(IDEMPOTENCY).values(
                    tenant=tenant, actor=actor, idem_key=key, request_digest=digest,
                    status=0, response=None, created_at=now))
            return None
        except IntegrityError:
            pass
        with self._engine.connect() as conn:
            row = conn.execute(select(IDEMPOTENCY).where(
                IDEMPOTENCY.c.tenant == tenant, IDEMPOTENCY.c.actor == actor,
                IDEMPOTENCY.c.idem_key == key)).one_or_none()
        if row is None:  # released between the two statements: claim again
            return self.claim(tenant, actor, key, digest, now)
        return Remembered(row.request_digest, row.status,
                          json.loads(row.response) if row.response else None)

    def complete(self, tenant: str, actor: str, key: str, status: int, response: Any) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(IDEMPOTENCY).where(
                IDEMPOTENCY.c.tenant == tenant, IDEMPOTENCY.c.actor == actor,
                IDEMPOTENCY.c.idem_key == key).values(
                    status=status, response=json.dumps(response, separators=(",", ":"))))

    def release(self, tenant: str, actor: str, key: str) -> None:
        """Forget a claim whose create failed (a retry may then try again)."""
        with self._engine.begin() as conn:
            conn.execute(delete(IDEMPOTENCY).where(
                IDEMPOTENCY.c.tenant == tenant, IDEMPOTENCY.c.actor == actor,
                IDEMPOTENCY.c.idem_key == key, IDEMPOTENCY.c.status == 0))
