"""Audit reports stay in the reader's tenant: a compliance officer of one tenant
never reads another's entries or subject-access history; reading across tenants
needs its own permission (issue "Security hardening", weakness 3)."""

from __future__ import annotations

import pytest

from vault import AccessDenied, Actor, Vault

from .test_data_path import customer

COLIN = Actor("colin", "acme")  # compliance_officer in acme
GLOBEX_CRM = Actor("crm", "globex")


@pytest.fixture
def two_tenants(vault: Vault) -> Vault:
    vault.roles.assign("crm", "crm_service", tenant="globex")
    vault.put(Actor("crm", "acme"), "customers", customer(1), purpose="account_management",
              subject_id="a-1")
    vault.put(GLOBEX_CRM, "customers", customer(2), purpose="account_management",
              subject_id="g-1")
    return vault


def test_a_report_without_a_tenant_covers_only_the_readers_tenant(two_tenants: Vault) -> None:
    """No tenant filter: only the reader's tenant, never the other's entries."""
    rows = two_tenants.audit.report("entries", actor=COLIN).rows
    assert rows and {r["tenant"] for r in rows} == {"acme"}


def test_another_tenants_report_is_refused_and_audited(two_tenants: Vault) -> None:
    """Asking for tenant globex as acme's compliance officer is an audited denial."""
    with pytest.raises(AccessDenied):
        two_tenants.audit.report("entries", actor=COLIN, tenant="globex")
    with pytest.raises(AccessDenied):
        two_tenants.audit.report("subject_access", actor=COLIN, tenant="globex",
                                 subject="g-1")
    denials = two_tenants.audit.report("entries", tenant="acme", actor_id="colin",
                                       decision="deny").rows
    assert [(r["action"], r["reason"]) for r in denials] == [("audit.read", "other_tenant")] * 2


def test_reading_across_tenants_needs_its_own_permission(two_tenants: Vault) -> None:
    """With audit.read_all granted, the reader may name any tenant or none."""
    two_tenants.policy.add_rule("compliance_officer", "acme", "audit", "audit.read_all",
                                "*")
    rows = two_tenants.audit.report("entries", actor=COLIN, tenant="globex").rows
    assert rows and {r["tenant"] for r in rows} == {"globex"}
    assert {"acme", "globex"} <= {r["tenant"] for r in two_tenants.audit.report(
        "entries", actor=COLIN).rows}


def test_the_local_operator_reads_every_tenant(two_tenants: Vault) -> None:
    """actor=None (the key-file holder) is not confined."""
    assert {"acme", "globex"} <= {r["tenant"] for r in two_tenants.audit.report("entries").rows}
