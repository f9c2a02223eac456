"""Upgrading a vault made by an older version: migrate, backfill expiry, keep everything."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from vault import Actor, ConfigError, Vault, VaultSettings
from vault.errors import KeyManagementError
from vault.retention.tables import RetentionRow
from vault.store import migrate
from vault.store.models import AuditEntryRow

from ..conftest import ROLE_USERS

CRM = Actor("crm", "acme")


def _expiry_rows(v: Vault) -> int:
    with v.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(RetentionRow.__table__))
                   .scalar_one())


def _upgrades(v: Vault) -> list[Any]:
    t = AuditEntryRow.__table__
    with v.engine.connect() as conn:
        return list(conn.execute(select(t.c.reason).where(t.c.action == "vault.upgrade")))


def test_an_old_vault_is_refused_then_upgraded_with_its_records_intact(
        settings: VaultSettings) -> None:
    """A vault left at 0002 (before retention) by an older release: open() names the fix;
    upgrade() migrates, gives old records their expiry, and every record still
    decrypts; a second upgrade changes nothing. (0002 itself cannot be downgraded:
    the consent ledger is evidence.)"""
    old = "0002"
    with Vault.init(settings=settings) as v:
        for user, role in ROLE_USERS.items():
            v.roles.assign(user, role, tenant="acme")
        ids = v.put_many(CRM, "customers",
                         [{"full_name": f"Ana {n}", "email": f"ana{n}@example.com",
                           "device_info": {"os": "x"}} for n in range(7)],
                         purpose="account_management", jurisdiction="DE")
        migrate.downgrade(v.engine, old)  # what an older release left behind
    with pytest.raises(ConfigError, match="vault upgrade"):
        Vault.open(settings=settings)
    with Vault.upgrade(settings=settings) as v:
        assert _expiry_rows(v) == len(ids)
        got = v.get_many(CRM, "customers", ids, purpose="account_management")
        assert [r.data["full_name"] for r in got] == [f"Ana {n}" for n in range(7)]
        assert [r.reason for r in _upgrades(v)] == [f"{old}>{migrate.head_revision()}:expiry:7"]
        assert v.audit_log.verify().ok
    with Vault.upgrade(settings=settings) as v:  # idempotent: nothing to do, nothing audited
        assert _expiry_rows(v) == len(ids)
        assert len(_upgrades(v)) == 1


def test_upgrade_of_a_vault_that_was_never_initialised_is_refused(
        settings: VaultSettings) -> None:
    """No key file: a clear KeyManagementError, and no database is created."""
    with pytest.raises(KeyManagementError, match="no key file"):
        Vault.upgrade(settings=settings)
    assert not (settings.home / "data.db").exists()
