"""``v.policy``: policy decisions, and rule changes (audited, ``policy.admin``)."""

from __future__ import annotations

from vault._kernel import Kernel
from vault.types import Actor

__all__ = ["PolicyService"]


class PolicyService:
    """Policy decisions and rule changes."""

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel

    def check(self, actor: Actor, obj: str, action: str, *, purpose: str) -> bool:
        """Would ``actor`` be allowed ``action`` on ``obj`` (``collection.field``)?"""
        if purpose not in self._k.rules.purposes:
            self._k.rules.purposes.get(purpose)
        return self._k.policy.is_allowed(actor.id, actor.tenant, obj, action, purpose)

    def add_rule(self, role: str, tenant: str, obj: str, action: str, purpose: str,
                 effect: str = "allow", *, actor: Actor | None = None) -> bool:
        """Add a policy rule; every process sees it within the refresh interval."""
        self._k.authorise(actor, "policy", "policy.admin", tenant=tenant)
        changed = self._k.policy.add_rule(role, tenant, obj, action, purpose, effect)
        self._k.audit("policy.change", actor=actor, tenant=tenant,
                                 reason=f"add:{effect}:{role}:{obj}:{action}:{purpose}")
        return changed

    def remove_rule(self, role: str, tenant: str, obj: str, action: str, purpose: str,
                    effect: str = "allow", *, actor: Actor | None = None) -> bool:
        """Remove a policy rule."""
        self._k.authorise(actor, "policy", "policy.admin", tenant=tenant)
        changed = self._k.policy.remove_rule(role, tenant, obj, action, purpose,
                                                        effect)
        self._k.audit("policy.change", actor=actor, tenant=tenant,
                                 reason=f"remove:{effect}:{role}:{obj}:{action}:{purpose}")
        return changed
