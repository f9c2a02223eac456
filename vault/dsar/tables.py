"""Tables of data-subject requests (in the data database).

``dsar_requests`` holds each request's current state, dates and verification,
ids and codes only: the requester's own contact details are sealed under a key
of the request (``identifiers_sealed``) and matched through keyed digests
(``identifier_digests``), never stored in clear. ``dsar_events`` is the
request's history, append-only: database triggers refuse UPDATE and DELETE (and
TRUNCATE on PostgreSQL), as for the audit log, so on-time figures come from
events nobody can edit.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import Date, Index, Integer, LargeBinary, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from vault.store.base import Base, bigint_pk, str64, str128

__all__ = ["DSAR_EVENTS", "DSAR_REQUESTS", "DSAREventRow", "DSARRequestRow"]


class DSARRequestRow(Base):
    """One data-subject request: ids, codes and dates."""

    __tablename__ = "dsar_requests"

    id: Mapped[str64] = mapped_column(primary_key=True)
    tenant: Mapped[str128]
    kind: Mapped[str] = mapped_column(String(32))
    right: Mapped[str64]
    regime: Mapped[str] = mapped_column(String(32))
    jurisdiction: Mapped[str | None] = mapped_column(String(16))
    subject_id: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    agent: Mapped[str | None] = mapped_column(String(128))
    agent_authorisation: Mapped[str | None] = mapped_column(String(128))
    received_at: Mapped[dt.datetime]
    received_on: Mapped[dt.date] = mapped_column(Date)
    acknowledge_by: Mapped[dt.date | None] = mapped_column(Date)
    acknowledged_at: Mapped[dt.datetime | None]
    due_on: Mapped[dt.date] = mapped_column(Date)
    first_due_on: Mapped[dt.date] = mapped_column(Date)
    extended: Mapped[bool]
    notified_at: Mapped[dt.datetime | None]
    tier: Mapped[str64]
    verification: Mapped[str] = mapped_column(String(32))
    # INTEGER, as migration 0012 made it (the type map's default int is BIGINT).
    failed_attempts: Mapped[int] = mapped_column(Integer)
    identifier_digests: Mapped[str] = mapped_column(Text)
    identifiers_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    details: Mapped[str] = mapped_column(Text)
    result: Mapped[str] = mapped_column(Text)
    reject_reason: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_dsar_requests_tenant_state", "tenant", "state"),
        Index("ix_dsar_requests_subject", "tenant", "subject_id"),
    )


class DSAREventRow(Base):
    """One move in a request's history. Append-only (triggers)."""

    __tablename__ = "dsar_events"

    seq: Mapped[bigint_pk]
    request_id: Mapped[str64]
    tenant: Mapped[str128]
    at: Mapped[dt.datetime]
    actor: Mapped[str128]
    event: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (Index("ix_dsar_events_request", "request_id", "seq"),)


DSAR_REQUESTS = cast(Table, DSARRequestRow.__table__)
DSAR_EVENTS = cast(Table, DSAREventRow.__table__)
