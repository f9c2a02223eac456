"""Vault: a privacy and compliance layer for customer data.

Field-by-field AES-256-GCM under per-subject keys, blind-index search, Casbin
decisions per field and purpose, and a hash-chained audit log of every access.

    >>> from vault import Vault, Actor
    >>> with Vault.open(".vault") as v:                       # doctest: +SKIP
    ...     rid = v.put(Actor("crm"), "customers", {"full_name": "Ana"},
    ...                 purpose="account_management")
"""

from vault import errors
from vault.admin import KeyStatus, Resurrection, RoleAssignment, RotationResult
from vault.audit.chain import Decision, VerifyReport
from vault.audit.context import correlation_id
from vault.clock import Clock, FixedClock, SystemClock
from vault.config import VaultSettings
from vault.errors import (
    AccessDenied,
    AuditError,
    ConfigError,
    ConsentRequired,
    DecryptionError,
    InvalidData,
    KeyDestroyed,
    LegalHoldActive,
    NotFound,
    StepUpRequired,
    SubjectRestricted,
    TransferRefused,
    VaultError,
)
from vault.facade import Vault
from vault.types import Actor, Record, SecondFactor

__all__ = [
    "AccessDenied",
    "Actor",
    "AuditError",
    "Clock",
    "ConfigError",
    "ConsentRequired",
    "DecryptionError",
    "Decision",
    "FixedClock",
    "InvalidData",
    "KeyDestroyed",
    "KeyStatus",
    "LegalHoldActive",
    "NotFound",
    "Record",
    "Resurrection",
    "RoleAssignment",
    "RotationResult",
    "SecondFactor",
    "StepUpRequired",
    "SubjectRestricted",
    "SystemClock",
    "TransferRefused",
    "Vault",
    "VaultError",
    "VaultSettings",
    "VerifyReport",
    "correlation_id",
    "errors",
]

__version__ = "0.1.0"
