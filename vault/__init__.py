"""Vault: a privacy and compliance layer for customer data.

Field-by-field AES-256-GCM under per-subject keys, blind-index search, Casbin
decisions per field and purpose, and a hash-chained audit log of every access.

    >>> from vault import Vault, Actor
    >>> with Vault.open(".vault") as v:                       # doctest: +SKIP
    ...     rid = v.put(Actor("crm"), "customers", {"full_name": "Ana"},
    ...                 purpose="account_management")

The names below are loaded when first used (PEP 562), so that ``import vault``
(and ``vault --help``) does not import SQLAlchemy, Casbin and the services.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Where each public name lives.
_HOMES = {
    **dict.fromkeys(("KeyStatus", "Resurrection", "RoleAssignment", "RotationResult"),
                    "vault.admin"),
    **dict.fromkeys(("Decision", "VerifyReport"), "vault.audit.chain"),
    "correlation_id": "vault.audit.context",
    **dict.fromkeys(("Clock", "FixedClock", "SystemClock"), "vault.clock"),
    "VaultSettings": "vault.config",
    **dict.fromkeys(("AccessDenied", "AuditError", "ConfigError", "ConsentRequired",
                     "DecryptionError", "InvalidData", "KeyDestroyed", "LegalHoldActive",
                     "NotFound", "StepUpRequired", "SubjectRestricted", "TransferRefused",
                     "VaultError"),
                    "vault.errors"),
    "Vault": "vault.facade",
    **dict.fromkeys(("Actor", "Record", "SecondFactor"), "vault.types"),
}


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("vault.errors")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'vault' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
