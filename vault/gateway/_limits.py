"""Per-credential rate limits whose counters live in the data database, so that
they hold across replicas: one fixed window per minute and bucket, counted with
one upsert per request (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Column, Engine, Integer, MetaData, String, Table, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from vault.gateway._problems import GatewayProblem

__all__ = ["RATE_LIMITS", "RateLimiter"]

_META = MetaData()
#: Created by migration 0010 of the data database.
RATE_LIMITS = Table(
    "gateway_rate_limits", _META,
    Column("bucket", String(160), primary_key=True),
    Column("window", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
)
WINDOW_SECONDS = 60


class RateLimiter:
    """Counts requests per (credential, kind) and minute; refuses past the limit."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert = (postgresql.insert if engine.dialect.name == "postgresql"
                        else sqlite.insert)

    def hit(self, credential: str, kind: str, limit: int, now: dt.datetime) -> None:
        """Count one request; past ``limit`` in this minute, 429 with Retry-After.

        A limit of 0 counts nothing. A counter that cannot be written lets the
        request through (the data path's own transaction fails closed if the
        database is down).
        """
        if limit <= 0:
            return
        epoch = int(now.timestamp())
        window = epoch // WINDOW_SECONDS
        bucket = f"{kind}:{credential}"[:160]
        upsert = self._insert(RATE_LIMITS).values(bucket=bucket, window=window, count=1)
        stmt = upsert.on_conflict_do_update(
            index_elements=[RATE_LIMITS.c.bucket, RATE_LIMITS.c.window],
            set_={"count": RATE_LIMITS.c.count + 1}).returning(RATE_LIMITS.c.count)
        try:
            with self._engine.begin() as conn:
                count = int(conn.execute(stmt).scalar_one())
                if count == 1:  # a new window: forget this bucket's older ones
                    conn.execute(delete(RATE_LIMITS).where(RATE_LIMITS.c.bucket == bucket,
                                                           RATE_LIMITS.c.window < window))
        except SQLAlchemyError:
            return
        if count > limit:
            retry = WINDOW_SECONDS - epoch % WINDOW_SECONDS
            raise GatewayProblem(429, "rate_limited", "Too many requests",
                                 headers={"Retry-After": str(max(1, retry))})
