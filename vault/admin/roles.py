"""``v.roles``: assign, revoke and list roles per tenant (Casbin grouping rules).

Each change is audited on the administrative chain. When an ``actor`` is given
the policy decides whether it may act (``policy.admin``), and it may not give
itself a role that grants data actions; when it is omitted, the caller is the
local operator who holds the key file, recorded as ``system``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vault._kernel import Kernel
from vault.audit.chain import Decision
from vault.errors import AccessDenied
from vault.policy.engine import ALLOW, DATA_ACTIONS
from vault.types import Actor, check_identifier, check_tenant

__all__ = ["RoleAssignment", "RoleService"]


@dataclass(frozen=True, slots=True)
class RoleAssignment:
    user: str
    role: str
    tenant: str


class RoleService:
    """Assign, revoke and list roles per tenant (Casbin grouping rules)."""

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel

    def assign(self, user: str, role: str, *, tenant: str, actor: Actor | None = None) -> bool:
        """Give ``user`` the ``role`` in ``tenant``.

        Returns:
            False if the user already had the role.

        Raises:
            UnknownRole: the policy defines no such role.
            AccessDenied: ``actor`` may not administer the policy, or would give
                itself a role that grants data actions (separation of duties;
                audited as ``self_grant``).
        """
        if actor is not None and user == getattr(actor, "id", None) and self._grants_data(role):
            self._k.authorise(actor, "policy", "policy.admin", tenant=tenant)
            self._k.audit("roles.assign", actor=actor, tenant=tenant,
                          decision=Decision.DENY, reason=f"self_grant:{role}")
            raise AccessDenied("no one gives themselves a role that grants data actions",
                               reason="self_grant")
        return self._change("roles.assign", self._k.policy.assign_role, user, role,
                            tenant=tenant, actor=actor)

    def revoke(self, user: str, role: str, *, tenant: str, actor: Actor | None = None) -> bool:
        """Take ``role`` in ``tenant`` away from ``user``; False if it was not held."""
        return self._change("roles.revoke", self._k.policy.revoke_role, user, role,
                            tenant=tenant, actor=actor)

    def _grants_data(self, role: str) -> bool:
        return any(rule[0] == role and rule[3] in DATA_ACTIONS and rule[5] == ALLOW
                   for rule in self._k.policy.rules())

    def _change(self, action: str, apply: Callable[..., bool], user: str, role: str, *,
                tenant: str, actor: Actor | None) -> bool:
        check_identifier(user, "user")
        self._k.authorise(actor, "policy", "policy.admin", tenant=tenant, step_up="roles")
        changed = apply(user, role, tenant=tenant)
        self._k.audit(action, actor=actor, tenant=tenant,
                      reason=f"{role}:{user}" if changed else f"unchanged:{role}:{user}")
        return changed

    def list(self, *, tenant: str | None = None, user: str | None = None) -> list[RoleAssignment]:
        """Role assignments, optionally of one tenant or one user."""
        if tenant is not None:
            check_tenant(tenant)
        return [
            RoleAssignment(u, r, t)
            for u, r, t in self._k.policy.list_assignments(tenant=tenant)
            if user is None or u == user
        ]

    def known(self) -> frozenset[str]:
        """Names of the roles the policy defines."""
        return self._k.policy.known_roles()
