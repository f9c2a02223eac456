"""An administrator cannot escalate itself to personal data (issue "Security
hardening", weakness 4): no self-grant of a data role or of a data action to its
own role, and a rule granting a data action waits for a second administrator."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.helpers import stepped_up
from vault import AccessDenied, Actor, NotFound, Vault
from vault.errors import ApprovalRequired
from vault.store.models import AuditEntryRow

from .test_data_path import CRM, customer

# Role and policy administration needs a second factor (step-up): both have one.
ADA = stepped_up(Actor("ada", "acme"))     # admin
ALAN = stepped_up(Actor("alan", "acme"))   # a second admin


def _entries(vault: Vault, action: str) -> list[tuple[str, str, str | None]]:
    table = AuditEntryRow.__table__
    with vault.engine.connect() as conn:
        return [(r.actor, r.decision, r.reason) for r in conn.execute(
            select(table).where(table.c.action == action).order_by(table.c.seq))]


@pytest.fixture
def admins(vault: Vault) -> Vault:
    vault.roles.assign("alan", "admin", tenant="acme")
    vault.put(CRM, "customers", customer(1), purpose="account_management", subject_id="s-1")
    return vault


def test_an_admin_cannot_give_itself_a_data_role(admins: Vault) -> None:
    """The review's escalation: ada assigns herself dpo. Refused and audited."""
    with pytest.raises(AccessDenied):
        admins.roles.assign("ada", "dpo", tenant="acme", actor=ADA)
    assert "dpo" not in admins.policy_engine.roles_for("ada", "acme")
    assert _entries(admins, "roles.assign")[-1] == ("ada", "deny", "self_grant:dpo")
    assert admins.roles.assign("ada", "compliance_officer", tenant="acme", actor=ADA)


def test_an_admin_cannot_grant_a_data_action_to_its_own_role(admins: Vault) -> None:
    """A read rule for the admin role, asked by an admin: refused, audited."""
    with pytest.raises(AccessDenied):
        admins.policy.add_rule("admin", "acme", "customers.*", "read", "security", actor=ADA)
    assert not admins.policy.check(ADA, "customers.email", "read", purpose="security")
    assert _entries(admins, "policy.change")[-1][:2] == ("ada", "deny")


def test_a_data_grant_waits_for_a_second_administrator(admins: Vault) -> None:
    """ada asks, the rule is not in force; ada cannot approve it herself; alan can."""
    with pytest.raises(ApprovalRequired) as info:
        admins.policy.add_rule("analyst", "acme", "customers.email", "read", "analytics",
                               actor=ADA)
    change = info.value.change_id
    andy = Actor("andy", "acme")
    assert not admins.policy.check(andy, "customers.email", "read", purpose="analytics")
    assert [c.id for c in admins.policy.pending(tenant="acme")] == [change]
    with pytest.raises(AccessDenied):
        admins.policy.approve(change, actor=ADA)
    approved = admins.policy.approve(change, actor=ALAN)
    assert (approved.state, approved.decided_by) == ("approved", "alan")
    assert admins.policy.check(andy, "customers.email", "read", purpose="analytics")
    assert admins.policy.pending() == []
    with pytest.raises(NotFound):
        admins.policy.approve(change, actor=ALAN)
    assert [e[:2] for e in _entries(admins, "policy.approve")] == [
        ("ada", "deny"), ("alan", "allow")]
    assert _entries(admins, "policy.request")[0][0] == "ada"


def test_a_rejected_change_is_never_applied(admins: Vault) -> None:
    """Rejection leaves the policy as it was."""
    with pytest.raises(ApprovalRequired) as info:
        admins.policy.add_rule("marketing", "acme", "customers.phone", "read", "marketing",
                               actor=ADA)
    assert admins.policy.reject(info.value.change_id, actor=ALAN).state == "rejected"
    assert not admins.policy.check(Actor("maya", "acme"), "customers.phone", "read",
                                   purpose="marketing")


def test_non_data_rules_and_the_local_operator_need_no_approval(admins: Vault) -> None:
    """A deny rule narrows access: applied at once; the key-file holder applies any."""
    assert admins.policy.add_rule("sales_rep", "acme", "customers.phone", "read",
                                  "sales_outreach", "deny", actor=ADA)
    assert admins.policy.add_rule("analyst", "acme", "customers.email", "read", "analytics")


def test_the_cli_lists_and_approves_pending_changes(admins: Vault) -> None:
    """vault policy pending / approve CHANGE_ID (as the local operator)."""
    from typer.testing import CliRunner

    from vault.cli import app

    with pytest.raises(ApprovalRequired) as info:
        admins.policy.add_rule("analyst", "acme", "customers.email", "read", "analytics",
                               actor=ADA)
    s = admins.settings
    env = {"VAULT_HOME": str(s.home), "VAULT_POLICIES": str(s.resolved_policies),
           "COLUMNS": "200"}
    if s.database_url:
        env |= {"VAULT_DATABASE_URL": s.database_url, "VAULT_KEYSTORE_URL": str(s.keystore_url)}
    listed = CliRunner().invoke(app, ["policy", "pending"], env=env)
    assert listed.exit_code == 0 and info.value.change_id in listed.output
    done = CliRunner().invoke(app, ["policy", "approve", info.value.change_id], env=env)
    assert done.exit_code == 0 and "approved" in done.output
    admins.policy_engine.refresh(force=True)
    assert admins.policy.check(Actor("andy", "acme"), "customers.email", "read",
                               purpose="analytics")
