"""The Core ``Table`` of every ORM model of the data database, under one name each.

The statements of Vault are SQLAlchemy Core; the models in
:mod:`vault.store.models`, :mod:`vault.consent.tables` and
:mod:`vault.retention.tables` declare the tables. Modules that build
statements import the tables from here rather than each casting
``Model.__table__`` again.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from vault.consent.tables import ConsentEventRow, ConsentStateRow
from vault.policy.tables import PolicyChangeRow
from vault.retention.tables import (
    LegalHoldRow,
    RetentionFingerprintRow,
    RetentionRow,
    RetentionRunRow,
    RetentionSubjectRow,
    ShredBatchRow,
    ShredQueueRow,
)
from vault.store.models import (
    AuditEntryRow,
    BlindIndexRow,
    ErasedSubjectRow,
    Meta,
    RecordRow,
    SubjectRow,
)

__all__ = [
    "AUDIT_LOG",
    "BLIND_INDEX",
    "CONSENT_EVENTS",
    "CONSENT_STATE",
    "ERASED_SUBJECTS",
    "LEGAL_HOLDS",
    "META",
    "POLICY_CHANGES",
    "RECORDS",
    "RETENTION",
    "RETENTION_FINGERPRINTS",
    "RETENTION_RUNS",
    "RETENTION_SUBJECTS",
    "SHRED_BATCHES",
    "SHRED_QUEUE",
    "SUBJECTS",
]

RECORDS = cast(Table, RecordRow.__table__)
AUDIT_LOG = cast(Table, AuditEntryRow.__table__)
SUBJECTS = cast(Table, SubjectRow.__table__)
BLIND_INDEX = cast(Table, BlindIndexRow.__table__)
#: Crypto-shredded subjects (survives a restore of the key store).
ERASED_SUBJECTS = cast(Table, ErasedSubjectRow.__table__)
META = cast(Table, Meta.__table__)
POLICY_CHANGES = cast(Table, PolicyChangeRow.__table__)
CONSENT_EVENTS = cast(Table, ConsentEventRow.__table__)
CONSENT_STATE = cast(Table, ConsentStateRow.__table__)
RETENTION = cast(Table, RetentionRow.__table__)
RETENTION_RUNS = cast(Table, RetentionRunRow.__table__)
#: Per-subject retention events (last interaction, contract end, consent withdrawn).
RETENTION_SUBJECTS = cast(Table, RetentionSubjectRow.__table__)
RETENTION_FINGERPRINTS = cast(Table, RetentionFingerprintRow.__table__)
LEGAL_HOLDS = cast(Table, LegalHoldRow.__table__)
SHRED_QUEUE = cast(Table, ShredQueueRow.__table__)
SHRED_BATCHES = cast(Table, ShredBatchRow.__table__)
