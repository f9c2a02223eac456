"""``v.policy``: policy decisions, and rule changes (audited, ``policy.admin``).

Separation of duties: an administrator never grants a data action (read,
search, export, ...) to a role it holds itself, and a rule change that grants
a data action to any role is not applied by the administrator who asks for it:
it is recorded as a pending change (:class:`~vault.errors.ApprovalRequired`)
that a second administrator approves (:meth:`PolicyService.approve`). Both
steps, and every refused attempt, are audited. The local operator (no
``actor``: it holds the key file and can read everything anyway) changes
rules directly.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update

from vault._kernel import Kernel
from vault.audit.chain import Decision
from vault.errors import AccessDenied, ApprovalRequired, NotFound
from vault.policy.engine import ALLOW, DATA_ACTIONS, DENY, WILDCARD, check_rule
from vault.store.tables import POLICY_CHANGES
from vault.types import Actor, actor_id, check_identifier

__all__ = ["PendingChange", "PolicyService"]

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A rule change waiting for (or decided by) a second administrator."""

    id: str
    op: str
    role: str
    tenant: str
    obj: str
    action: str
    purpose: str
    effect: str
    requested_by: str
    requested_at: dt.datetime
    state: str
    decided_by: str | None
    decided_at: dt.datetime | None

    @property
    def rule(self) -> str:
        return f"{self.op}:{self.effect}:{self.role}:{self.obj}:{self.action}:{self.purpose}"


def _grants_data(op: str, action: str, effect: str) -> bool:
    """Whether the change can widen access to data: adding an allow, or removing a
    deny, of a data action."""
    return action in DATA_ACTIONS and (op, effect) in (("add", ALLOW), ("remove", DENY))


class PolicyService:
    """Policy decisions and rule changes."""

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel

    def check(self, actor: Actor, obj: str, action: str, *, purpose: str) -> bool:
        """Would ``actor`` be allowed ``action`` on ``obj`` (``collection.field``)?

        Raises:
            UnknownPurpose: the purpose is not registered (the message lists those that are).
            UnknownCollection, UnknownField: ``obj`` names a collection or field the
                schema does not declare (a misspelt name is not a silent deny).
        """
        if purpose not in self._k.rules.purposes:
            self._k.rules.purposes.get(purpose)
        if isinstance(obj, str) and "." in obj:  # a data object; "audit", "keys"... have none
            collection, _dot, field = obj.partition(".")
            schema = self._k.rules.schemas.get(collection)
            if field != "*":
                schema.field(field)
        return self._k.policy.is_allowed(actor.id, actor.tenant, obj, action, purpose)

    def add_rule(self, role: str, tenant: str, obj: str, action: str, purpose: str,
                 effect: str = "allow", *, actor: Actor | None = None) -> bool:
        """Add a policy rule; every process sees it within the refresh interval.

        Raises:
            ApprovalRequired: ``actor`` asked to grant a data action: the change is
                pending until another administrator approves it.
            AccessDenied: ``actor`` may not administer the policy, or the rule would
                grant a data action to a role ``actor`` holds (both audited).
        """
        return self._apply_or_request("add", role, tenant, obj, action, purpose, effect, actor)

    def remove_rule(self, role: str, tenant: str, obj: str, action: str, purpose: str,
                    effect: str = "allow", *, actor: Actor | None = None) -> bool:
        """Remove a policy rule (removing a deny of a data action needs approval,
        as :meth:`add_rule` of an allow does)."""
        return self._apply_or_request("remove", role, tenant, obj, action, purpose, effect,
                                      actor)

    def approve(self, change_id: str, *, actor: Actor | None = None) -> PendingChange:
        """Apply a pending change, as an administrator other than the one who asked.

        Raises:
            NotFound: no pending change with that id.
            AccessDenied: ``actor`` asked for it itself, holds the role it grants
                to, or may not administer the policy (audited).
        """
        return self._decide(change_id, APPROVED, actor)

    def reject(self, change_id: str, *, actor: Actor | None = None) -> PendingChange:
        """Decline a pending change; nothing is applied. Raises as :meth:`approve`."""
        return self._decide(change_id, REJECTED, actor)

    def pending(self, *, tenant: str | None = None) -> list[PendingChange]:
        """The changes waiting for approval, oldest first."""
        query = select(POLICY_CHANGES).where(POLICY_CHANGES.c.state == PENDING)
        if tenant is not None:
            query = query.where(POLICY_CHANGES.c.tenant == tenant)
        with self._k.read_only() as conn:
            rows = conn.execute(query.order_by(POLICY_CHANGES.c.requested_at)).all()
        return [_change(r) for r in rows]

    # ------------------------------------------------------------------ internals

    def _apply_or_request(self, op: str, role: str, tenant: str, obj: str, action: str,
                          purpose: str, effect: str, actor: Actor | None) -> bool:
        self._k.authorise(actor, "policy", "policy.admin", tenant=tenant, step_up="policy")
        check_rule(role, tenant, obj, action, purpose, effect)
        reason = f"{op}:{effect}:{role}:{obj}:{action}:{purpose}"
        if actor is not None and _grants_data(op, action, effect):
            self._refuse_own_role(actor, role, tenant, "policy.change", reason)
            change_id = uuid.uuid4().hex
            with self._k.engine.begin() as conn:
                conn.execute(insert(POLICY_CHANGES), [{
                    "id": change_id, "op": op, "role": role, "tenant": tenant, "obj": obj,
                    "action": action, "purpose": purpose, "effect": effect,
                    "requested_by": actor.id, "requested_at": self._k.clock.now(),
                    "state": PENDING, "decided_by": None, "decided_at": None}])
                self._k.audit_log.append(conn, [self._k.event(
                    "policy.request", actor=actor, tenant=tenant, reason=f"{change_id}:{reason}")])
            raise ApprovalRequired(f"a change granting {action} waits for a second "
                                   f"administrator: approve {change_id}", change_id=change_id)
        return self._apply(op, role, tenant, obj, action, purpose, effect, actor, reason)

    def _apply(self, op: str, role: str, tenant: str, obj: str, action: str, purpose: str,
               effect: str, actor: Actor | None, reason: str) -> bool:
        engine = self._k.policy
        change = engine.add_rule if op == "add" else engine.remove_rule
        changed = change(role, tenant, obj, action, purpose, effect)
        self._k.audit("policy.change", actor=actor, tenant=tenant, reason=reason)
        return changed

    def _refuse_own_role(self, actor: Actor, role: str, tenant: str, action: str,
                         reason: str) -> None:
        """No one widens data access for a role it holds (in the tenant, or anywhere
        for a rule of every tenant)."""
        tenants = [actor.tenant] if tenant == WILDCARD else [tenant]
        if any(role in self._k.policy.roles_for(actor.id, t) for t in tenants):
            self._k.audit(action, actor=actor, tenant=tenant, decision=Decision.DENY,
                          reason=f"own_role:{reason}")
            raise AccessDenied(f"no one grants a data action to a role they hold ({role})",
                               reason="own_role")

    def _decide(self, change_id: str, state: str, actor: Actor | None) -> PendingChange:
        check_identifier(change_id, "change_id")
        with self._k.read_only() as conn:
            row = conn.execute(select(POLICY_CHANGES).where(
                POLICY_CHANGES.c.id == change_id,
                POLICY_CHANGES.c.state == PENDING)).one_or_none()
        if row is None:
            raise NotFound(f"no pending policy change {change_id}")
        change = _change(row)
        action = "policy.approve" if state == APPROVED else "policy.reject"
        self._k.authorise(actor, "policy", "policy.admin", tenant=change.tenant,
                          step_up="policy")
        if actor is not None and actor.id == change.requested_by:
            self._k.audit(action, actor=actor, tenant=change.tenant, decision=Decision.DENY,
                          reason=f"self_approval:{change.id}")
            raise AccessDenied("a change is approved by another administrator than the "
                               "one who asked for it", reason="self_approval")
        if actor is not None and state == APPROVED:
            self._refuse_own_role(actor, change.role, change.tenant, action, change.rule)
        now = self._k.clock.now()
        with self._k.engine.begin() as conn:
            moved = conn.execute(update(POLICY_CHANGES).where(
                POLICY_CHANGES.c.id == change_id, POLICY_CHANGES.c.state == PENDING).values(
                state=state, decided_by=actor_id(actor), decided_at=now)).rowcount
            if moved != 1:
                raise NotFound(f"no pending policy change {change_id}")
            self._k.audit_log.append(conn, [self._k.event(
                action, actor=actor, tenant=change.tenant, reason=f"{change.id}:{change.rule}")])
        if state == APPROVED:
            self._apply(change.op, change.role, change.tenant, change.obj, change.action,
                        change.purpose, change.effect, actor, change.rule)
        return _change_with(change, state=state, decided_by=actor_id(actor), decided_at=now)


def _change(row: Any) -> PendingChange:
    return PendingChange(
        id=row.id, op=row.op, role=row.role, tenant=row.tenant, obj=row.obj,
        action=row.action, purpose=row.purpose, effect=row.effect,
        requested_by=row.requested_by, requested_at=row.requested_at, state=row.state,
        decided_by=row.decided_by, decided_at=row.decided_at)


def _change_with(change: PendingChange, **values: Any) -> PendingChange:
    return PendingChange(**{**{n: getattr(change, n) for n in PendingChange.__slots__},
                            **values})
