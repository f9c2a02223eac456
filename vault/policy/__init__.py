"""Access policy: Casbin decisions (cached, fail-closed) and purposes of processing.

Only :mod:`vault.policy.engine` (and the adapter it plugs into Casbin) touch
``casbin``; the rest of Vault uses :class:`CasbinPolicyEngine`.
"""

from vault.policy.engine import (
    ADMIN_ACTIONS,
    ALLOW,
    DATA_ACTIONS,
    DENY,
    WILDCARD,
    CasbinPolicyEngine,
)
from vault.policy.purposes import Purpose, PurposeRegistry, load_purposes

__all__ = [
    "ADMIN_ACTIONS",
    "ALLOW",
    "DATA_ACTIONS",
    "DENY",
    "WILDCARD",
    "CasbinPolicyEngine",
    "Purpose",
    "PurposeRegistry",
    "load_purposes",
]
