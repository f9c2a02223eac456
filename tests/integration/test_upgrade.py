"""Upgrading a vault made by an older version: migrate, backfill expiry, keep everything."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select, text

from vault import Actor, ConfigError, FixedClock, Vault, VaultSettings
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
        assert [r.reason for r in _upgrades(v)] == [
            f"{old}>{migrate.head_revision()}:expiry:7", "records_sealed:7"]
        assert v.audit_log.verify().ok
    with Vault.upgrade(settings=settings) as v:  # idempotent: nothing to do, nothing audited
        assert _expiry_rows(v) == len(ids)
        assert len(_upgrades(v)) == 2


def test_upgrade_from_0003_keeps_queued_shreds_and_old_runs(settings: VaultSettings) -> None:
    """A vault at 0003 whose last sweep died after removing a subject's last record,
    the subject still in the per-subject shred queue: after the upgrade to 0004
    (batch shred queue, runs record their tenant) the next sweep shreds it, once;
    the run from before the upgrade is listed with no tenant."""
    clock = FixedClock(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    with Vault.init(settings=settings, clock=clock) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        v.put(CRM, "customers", {"full_name": "Old"}, purpose="account_management",
              subject_id="s-old", jurisdiction="DE")
        clock.set(dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
        old_run = v.retention.sweep().run_id           # an ordinary run before 0004
        v.put(CRM, "customers", {"full_name": "Left"}, purpose="account_management",
              subject_id="s-left", jurisdiction="DE")
        migrate.downgrade(v.engine, "0003")
        with v.engine.begin() as conn:                  # what a killed 0003 run left
            conn.execute(text("DELETE FROM records WHERE subject_id = 's-left'"))
            conn.execute(text("INSERT INTO retention_shred_queue (tenant, subject_id, "
                              "queued_at, run_id) VALUES ('acme', 's-left', :t, 'r0')"),
                         {"t": dt.datetime(2027, 1, 1)})
    with pytest.raises(ConfigError, match="vault upgrade"):
        Vault.open(settings=settings)
    with Vault.upgrade(settings=settings, clock=clock) as v:
        assert migrate.current_revision(v.engine) == migrate.head_revision() == "0012"
        assert v.retention.run(old_run).tenant is None
        assert v.keystore.is_destroyed("acme", "s-old")
        assert not v.keystore.is_destroyed("acme", "s-left")
        report = v.retention.sweep(tenant="acme")
        assert report.subjects_shredded == 1 and v.keystore.is_destroyed("acme", "s-left")
        assert v.retention.run(report.run_id).tenant == "acme"
        assert v.retention.sweep().subjects_shredded == 0
        with v.engine.connect() as conn:
            for table in ("retention_shred_queue", "retention_shred_batches"):
                assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0
        assert v.audit_log.verify().ok


def test_upgrade_of_a_vault_that_was_never_initialised_is_refused(
        settings: VaultSettings) -> None:
    """No key file: a clear KeyManagementError, and no database is created."""
    with pytest.raises(KeyManagementError, match="no key file"):
        Vault.upgrade(settings=settings)
    assert not (settings.home / "data.db").exists()
