"""Every entry point that takes a tenant checks it once, before anything reaches the
audit hash input: a NUL or a list is a typed error, never an entry that breaks
verification for good (issue "Security hardening", weakness 8)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vault import Vault
from vault.errors import InvalidData

BAD_TENANTS: list[Any] = ["acme\x00", "ac me", "", ["acme"], 5, "x" * 200]

CALLS: dict[str, Callable[[Vault, Any], object]] = {
    "keys.destroy": lambda v, t: v.keys.destroy("s-1", tenant=t),
    "retention.plan": lambda v, t: v.retention.plan(tenant=t),
    "retention.sweep": lambda v, t: v.retention.sweep(tenant=t, dry_run=True),
    "retention.report": lambda v, t: v.retention.report(tenant=t),
    "retention.runs": lambda v, t: v.retention.runs(tenant=t),
    "retention.record_event": lambda v, t: v.retention.record_event(t, "s-1",
                                                                    "last_interaction"),
    "retention.clear_event": lambda v, t: v.retention.clear_event(t, "s-1", "contract_end"),
    "holds.list": lambda v, t: v.holds.list(tenant=t),
    "holds.is_held": lambda v, t: v.holds.is_held(t),
    "roles.list": lambda v, t: v.roles.list(tenant=t),
    "subjects.get": lambda v, t: v.subjects.get("s-1", tenant=t),
    "consent.summary": lambda v, t: v.consent.summary(tenant=t),
}


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("tenant", BAD_TENANTS, ids=repr)
def test_a_bad_tenant_is_a_typed_error_and_leaves_the_log_verifiable(
        vault: Vault, tmp_path: Path, name: str, tenant: Any) -> None:
    """InvalidData (InvalidTenant) naming the tenant parameter, never the value; the
    log still verifies and a checkpoint can still be signed."""
    before = vault.audit_log.count()
    with pytest.raises(InvalidData) as info:
        CALLS[name](vault, tenant)
    assert info.value.field == "tenant"
    if isinstance(tenant, str) and tenant:
        assert tenant not in str(info.value)
    assert vault.audit_log.count() == before
    assert vault.audit_log.verify().ok
    vault.audit.checkpoint(tmp_path / "checkpoints")
