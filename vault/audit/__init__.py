"""The hash-chained, append-only audit log and its verification."""

from vault.audit.chain import (
    ADMIN_CHAIN,
    AuditEvent,
    Damage,
    Decision,
    VerifyReport,
    chain_for,
    entry_hash,
    verify_rows,
)
from vault.audit.context import correlation_id, current_request_id
from vault.audit.log import AuditLog

__all__ = [
    "ADMIN_CHAIN",
    "AuditEvent",
    "AuditLog",
    "Damage",
    "Decision",
    "VerifyReport",
    "chain_for",
    "correlation_id",
    "current_request_id",
    "entry_hash",
    "verify_rows",
]
