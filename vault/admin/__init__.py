"""Administrative services reached from the facade: roles, keys, audit, policy.

Each lives in a module of its own and takes the kernel; none imports another.
"""

from vault.admin.audit import AuditService
from vault.admin.keys import (
    KeyService,
    KeyStatus,
    MigrationResult,
    ProviderInfo,
    Resurrection,
    RotationResult,
)
from vault.admin.policy import PendingChange, PolicyService
from vault.admin.roles import RoleAssignment, RoleService

__all__ = [
    "AuditService",
    "KeyService",
    "KeyStatus",
    "MigrationResult",
    "PendingChange",
    "PolicyService",
    "ProviderInfo",
    "Resurrection",
    "RoleAssignment",
    "RoleService",
    "RotationResult",
]
