"""Tables of the data database.

Ciphertexts, blind indexes and the audit log live here; wrapped data keys do
not (see :mod:`vault.crypto.keystore`), so a backup of this database holds
nothing that can be decrypted once a subject's key is destroyed.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, LargeBinary, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from vault.store.base import Base, bigint_pk, str64, str128

__all__ = ["AuditEntryRow", "AuditHead", "BlindIndexRow", "ConfigSnapshotRow", "ErasedSubjectRow",
           "Meta", "RecordRow", "SubjectRow"]


class Meta(Base):
    """Settings fixed when the vault was initialised (e.g. the number of audit chains)."""

    __tablename__ = "vault_meta"

    key: Mapped[str64] = mapped_column(primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class SubjectRow(Base):
    """A data subject: only ids, a pseudonym and a jurisdiction, never PII."""

    __tablename__ = "subjects"

    tenant: Mapped[str128] = mapped_column(primary_key=True)
    subject_id: Mapped[str64] = mapped_column(primary_key=True)
    pseudonym: Mapped[str64] = mapped_column(index=True)
    jurisdiction: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime]
    # Set while processing is restricted (GDPR Art. 18, PIPL Art. 44); see vault.subjects.
    restricted_at: Mapped[dt.datetime | None]
    restriction_reason: Mapped[str | None] = mapped_column(String(64))


class ErasedSubjectRow(Base):
    """A crypto-shredded subject, written in the data database in the transaction of
    the destruction's audit entry (``keys.destroy`` or ``retention.shred``).

    The key store's tombstone can be undone by restoring an older copy of the key
    store; this marker is not in it, so the data path refuses a marked subject
    even when its key is live again (see :mod:`vault.store.erasures`). Rows are
    only inserted (the application role has no UPDATE or DELETE on them).
    """

    __tablename__ = "erased_subjects"

    tenant: Mapped[str128] = mapped_column(primary_key=True)
    subject_id: Mapped[str64] = mapped_column(primary_key=True)
    pseudonym: Mapped[str64]
    action: Mapped[str64]
    erased_at: Mapped[dt.datetime]


class RecordRow(Base):
    """One record: every field is its own AES-GCM envelope, framed in ``envelopes``."""

    __tablename__ = "records"

    id: Mapped[str64] = mapped_column(primary_key=True)
    tenant: Mapped[str128]
    collection: Mapped[str64]
    subject_id: Mapped[str64]
    envelopes: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)
    #: The record's seal (vault.crypto.envelope); None only before ``vault upgrade``.
    seal: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Where the record came from (web_form, import, sales_call...): GDPR Art. 15(1)(g).
    source: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_records_tenant_subject", "tenant", "subject_id"),
        Index("ix_records_tenant_collection", "tenant", "collection"),
    )


class BlindIndexRow(Base):
    """An equality-search token: HMAC of a normalised value, apart from the ciphertext."""

    __tablename__ = "blind_index"

    id: Mapped[bigint_pk]
    tenant: Mapped[str128]
    collection: Mapped[str64]
    field: Mapped[str64]
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    record_id: Mapped[str64] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"))

    __table_args__ = (
        Index("ix_blind_index_lookup", "tenant", "collection", "field", "digest"),
        Index("ix_blind_index_record", "record_id"),
    )


class AuditEntryRow(Base):
    """One audit entry. Append-only: database triggers refuse UPDATE and DELETE.

    ``subjects`` holds keyed pseudonyms, ``fields`` field names and
    ``record_ids`` ids, each as a JSON list: never a value. ``format`` is the
    entry format its hash follows (1: before migration 0007; 2: every column
    bound, see :mod:`vault.audit.chain`); ``context`` the canonical JSON of its
    context (``{}`` in format 1).
    """

    __tablename__ = "audit_log"

    seq: Mapped[bigint_pk]
    chain: Mapped[int]
    chain_seq: Mapped[int]
    ts: Mapped[dt.datetime]
    request_id: Mapped[str64]
    tenant: Mapped[str128]
    actor: Mapped[str128]
    action: Mapped[str64]
    collection: Mapped[str | None] = mapped_column(String(64))
    record_ids: Mapped[str] = mapped_column(Text)
    subjects: Mapped[str] = mapped_column(Text)
    fields: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str | None] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    format: Mapped[int] = mapped_column(SmallInteger, server_default="1")
    context: Mapped[str] = mapped_column(Text, server_default="{}")

    __table_args__ = (
        UniqueConstraint("chain", "chain_seq"),
        UniqueConstraint("chain", "prev_hash"),
        Index("ix_audit_log_ts", "ts"),
    )


class AuditHead(Base):
    """The head of each audit chain; its row is locked while appending."""

    __tablename__ = "audit_heads"

    chain: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    length: Mapped[int]
    head_hash: Mapped[str] = mapped_column(String(64))


class ConfigSnapshotRow(Base):
    """The configuration a process opened the vault with (see :mod:`vault.audit.config`).

    Append-only like the audit log: database triggers refuse UPDATE and DELETE.
    ``items`` is a JSON object of item name -> SHA-256 hex: names and digests,
    never a setting's value. ``audit_position`` is the position, in the
    administrative chain, of the ``config.*`` entry written with the row.
    """

    __tablename__ = "config_snapshots"

    id: Mapped[bigint_pk]
    recorded_at: Mapped[dt.datetime]
    digest: Mapped[str64]
    items: Mapped[str] = mapped_column(Text)
    audit_position: Mapped[int]
