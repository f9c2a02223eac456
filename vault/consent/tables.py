"""Tables of the consent ledger (in the data database).

``consent_events`` is append-only: database triggers refuse UPDATE and DELETE
(and TRUNCATE on PostgreSQL), as for the audit log. ``consent_state`` holds
the state each key is in after its newest event, written in the same
transaction as the event.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vault.store.base import Base, bigint_pk, str64, str128

__all__ = ["ConsentEventRow", "ConsentStateRow"]


class ConsentEventRow(Base):
    """One consent event; ids and codes only, never personal data."""

    __tablename__ = "consent_events"

    seq: Mapped[bigint_pk]
    event_id: Mapped[str64] = mapped_column(unique=True)
    tenant: Mapped[str128]
    subject_id: Mapped[str64]
    purpose: Mapped[str64]
    scope: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    regime: Mapped[str] = mapped_column(String(32))
    jurisdiction: Mapped[str | None] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(16))
    notice_id: Mapped[str | None] = mapped_column(String(64))
    notice_version: Mapped[int | None]
    notice_hash: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None]
    source: Mapped[str128]
    evidence: Mapped[str | None] = mapped_column(String(255))
    conflict: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str128]
    receipt: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(128))

    __table_args__ = (
        Index("ix_consent_events_key", "tenant", "subject_id", "purpose", "scope", "seq"),
        Index("ix_consent_events_occurred", "occurred_at"),
    )


class ConsentStateRow(Base):
    """The current state of one (tenant, subject, purpose, scope)."""

    __tablename__ = "consent_state"

    tenant: Mapped[str128] = mapped_column(primary_key=True)
    subject_id: Mapped[str64] = mapped_column(primary_key=True)
    purpose: Mapped[str64] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    regime: Mapped[str] = mapped_column(String(32))
    notice_id: Mapped[str | None] = mapped_column(String(64))
    notice_version: Mapped[int | None]
    expires_at: Mapped[dt.datetime | None]
    event_id: Mapped[str64]
    event_seq: Mapped[int]
    updated_at: Mapped[dt.datetime]
