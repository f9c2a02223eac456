"""Tables of retention and legal holds, in the data database (migrations 0003, 0004, 0006).

None holds personal data: ids, categories, times, counts. A hold's reason is
meant to be a case reference (the CLI and the library say so).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vault.store.base import Base, bigint_pk, str64, str128

__all__ = ["LegalHoldRow", "RetentionFingerprintRow", "RetentionRow", "RetentionRunRow",
           "RetentionSubjectRow", "ShredBatchRow", "ShredQueueRow"]


class RetentionRow(Base):
    """A record's next expiry: when its earliest still-pending category expires.

    ``expires_at`` is NULL while no category's period has started (e.g. it runs
    from a contract end not yet recorded). ``purge_at`` is when every category
    will have expired, if all of them delete or shred (the sweeper then deletes
    the whole record without reading it); ``shred_at`` is the earliest expiry
    of a ``shred`` category (the subject is then due for crypto-shredding).
    Kept in step by every write and by ``record_event``; the sweeper reads it
    through ``ix_retention_expires_at``.
    """

    __tablename__ = "retention"

    record_id: Mapped[str64] = mapped_column(
        ForeignKey("records.id", ondelete="CASCADE"), primary_key=True)
    tenant: Mapped[str128]
    subject_id: Mapped[str64]
    collection: Mapped[str64]
    category: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(16))
    expires_at: Mapped[dt.datetime | None]
    purge_at: Mapped[dt.datetime | None]
    shred_at: Mapped[dt.datetime | None]

    __table_args__ = (
        Index("ix_retention_expires_at", "expires_at", "record_id"),
        Index("ix_retention_tenant_subject", "tenant", "subject_id"),
    )


class RetentionSubjectRow(Base):
    """Per-subject retention events (times), and whether a shred is due."""

    __tablename__ = "retention_subjects"

    tenant: Mapped[str128] = mapped_column(primary_key=True)
    subject_id: Mapped[str64] = mapped_column(primary_key=True)
    last_interaction: Mapped[dt.datetime | None]
    contract_end: Mapped[dt.datetime | None]
    consent_withdrawn: Mapped[dt.datetime | None]
    shred_due: Mapped[bool] = mapped_column(Boolean, default=False)


class LegalHoldRow(Base):
    """A legal hold on one subject (``subject_id``) or a whole tenant (NULL).

    Holds are lifted, never deleted (a trigger refuses DELETE).
    """

    __tablename__ = "legal_holds"

    id: Mapped[str64] = mapped_column(primary_key=True)
    tenant: Mapped[str128]
    subject_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(200))
    placed_by: Mapped[str128]
    placed_at: Mapped[dt.datetime]
    until: Mapped[dt.datetime | None]
    lifted_at: Mapped[dt.datetime | None]
    lifted_by: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (Index("ix_legal_holds_tenant_subject", "tenant", "subject_id"),)


class RetentionRunRow(Base):
    """One sweep: progress is committed with every batch, so a crash leaves a true count."""

    __tablename__ = "retention_runs"

    id: Mapped[str64] = mapped_column(primary_key=True)
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    actor: Mapped[str128]
    #: The tenant the run was limited to; NULL: every tenant (and runs before 0004).
    tenant: Mapped[str | None] = mapped_column(String(128))
    batches: Mapped[int] = mapped_column(default=0)
    records_deleted: Mapped[int] = mapped_column(default=0)
    records_pruned: Mapped[int] = mapped_column(default=0)
    records_anonymised: Mapped[int] = mapped_column(default=0)
    subjects_shredded: Mapped[int] = mapped_column(default=0)
    held: Mapped[int] = mapped_column(default=0)

    __table_args__ = (Index("ix_retention_runs_started_at", "started_at"),
                      Index("ix_retention_runs_tenant_started_at", "tenant", "started_at"))


class ShredQueueRow(Base):
    """A subject whose data key must be destroyed (the key store is another database)
    and that waits on its own: a subject of a queued batch (:class:`ShredBatchRow`)
    that a legal hold covered when its batch was shredded, or one queued before 0004.

    Dequeued in the transaction that audits the destruction, so a crash in
    between is finished by the next run (destruction is idempotent).
    """

    __tablename__ = "retention_shred_queue"

    tenant: Mapped[str128] = mapped_column(primary_key=True)
    subject_id: Mapped[str64] = mapped_column(primary_key=True)
    queued_at: Mapped[dt.datetime]
    run_id: Mapped[str64]


class ShredBatchRow(Base):
    """The subjects one sweep batch queued for crypto-shredding (a JSON list of ids).

    Written in the batch transaction that removed the subjects' last records (one
    row, not one per subject); deleted in the transaction that audits their keys'
    destruction, which commits after the key store's, so a crash in between is
    finished by the next run. Subjects a hold covers then move to
    :class:`ShredQueueRow` in that same transaction.
    """

    __tablename__ = "retention_shred_batches"

    id: Mapped[bigint_pk]
    tenant: Mapped[str128]
    run_id: Mapped[str64]
    queued_at: Mapped[dt.datetime]
    subjects: Mapped[str] = mapped_column(Text)


class RetentionFingerprintRow(Base):
    """The fingerprint of the schedule, field categories and jurisdiction map that
    every stored expiry was computed from; the newest row is in force. A row is
    added (never updated) after each recomputation for a changed fingerprint."""

    __tablename__ = "retention_fingerprints"

    id: Mapped[bigint_pk]
    recorded_at: Mapped[dt.datetime]
    fingerprint: Mapped[str64]
