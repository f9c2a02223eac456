"""The hash-chained, append-only audit log and its verification."""

from vault.audit.chain import (
    ADMIN_CHAIN,
    AuditEvent,
    Damage,
    Decision,
    Finding,
    VerifyReport,
    chain_for,
    entry_hash,
    verify_rows,
)
from vault.audit.checkpoint import Checkpoint, load_checkpoints, load_public_key
from vault.audit.context import correlation_id, current_request_id
from vault.audit.log import AuditLog
from vault.audit.offline import verify_database
from vault.audit.report import (
    AuditReport,
    ReportFilters,
    ReportThresholds,
    ReportView,
    report,
)

__all__ = [
    "ADMIN_CHAIN",
    "AuditEvent",
    "AuditLog",
    "AuditReport",
    "Checkpoint",
    "Damage",
    "Decision",
    "Finding",
    "ReportFilters",
    "ReportThresholds",
    "ReportView",
    "VerifyReport",
    "chain_for",
    "correlation_id",
    "current_request_id",
    "entry_hash",
    "load_checkpoints",
    "load_public_key",
    "report",
    "verify_database",
    "verify_rows",
]
