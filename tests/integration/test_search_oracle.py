"""Search is not an oracle: searching a field needs the right to read it unmasked,
every search is audited with the fields it searched on (hit or miss), and misses
can be limited per actor (issue "Security hardening", weaknesses 1 and 2)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from vault import AccessDenied, Actor, FixedClock, Vault, VaultSettings
from vault.store.models import AuditEntryRow

from .test_data_path import CRM, SAM, customer

AUDIT = AuditEntryRow.__table__


def entries_after(vault: Vault, seq: int) -> list[Any]:
    with vault.engine.connect() as conn:
        return list(conn.execute(select(AUDIT).where(AUDIT.c.seq > seq)
                                 .order_by(AUDIT.c.seq)))


def last_seq(vault: Vault) -> int:
    with vault.engine.connect() as conn:
        return int(conn.execute(select(AUDIT.c.seq).order_by(AUDIT.c.seq.desc())
                                .limit(1)).scalar_one())


def test_a_role_that_may_not_read_a_field_may_not_search_it(vault: Vault) -> None:
    """crm_service may not read national_id for account management: searching it
    (guessing ids one by one) is refused and audited naming the field."""
    vault.put(CRM, "customers", customer(1, national_id="110101199003078515"),
              purpose="account_management")
    before = last_seq(vault)
    with pytest.raises(AccessDenied):
        vault.find(CRM, "customers", purpose="account_management",
                   national_id="110101199003078515")
    (entry,) = entries_after(vault, before)
    assert (entry.action, entry.decision, entry.actor) == ("search", "deny", "crm")
    assert "national_id" in entry.fields


def test_a_field_seen_only_masked_cannot_be_unmasked_by_searching(vault: Vault) -> None:
    """support_agent sees the phone masked: searching the hidden digits is refused."""
    vault.put(CRM, "customers", customer(2), purpose="account_management")
    with pytest.raises(AccessDenied):
        vault.find(SAM, "customers", purpose="customer_support", phone="+8613800138002")


def test_a_search_that_matches_nothing_is_audited(vault: Vault) -> None:
    """'Is X a customer here?' is an access: a miss leaves an entry naming the
    searched field and that nothing matched."""
    vault.put(CRM, "customers", customer(3), purpose="account_management")
    before = last_seq(vault)
    assert vault.find(CRM, "customers", purpose="account_management",
                      email="nobody@example.com") == []
    entries = entries_after(vault, before)
    assert [(e.action, e.decision, e.reason) for e in entries] == [
        ("search", "allow", "matched:0")]
    assert entries[0].fields == '["email"]' and entries[0].actor == "crm"


def test_a_search_that_matches_names_the_searched_fields(vault: Vault) -> None:
    """A hit is audited as before (the records read) plus the criteria entry."""
    rid = vault.put(CRM, "customers", customer(4), purpose="account_management")
    before = last_seq(vault)
    found = vault.find(CRM, "customers", purpose="account_management",
                       email="li.wei4@example.cn")
    assert [r.id for r in found] == [rid]
    entries = entries_after(vault, before)
    criteria = [e for e in entries if e.reason == "matched:1"]
    assert len(criteria) == 1 and criteria[0].fields == '["email"]'
    assert any(rid in e.record_ids for e in entries if e.action == "search")


def test_repeated_misses_are_limited_per_actor(tmp_path: Any) -> None:
    """With search_miss_limit set, an actor's misses past the limit within the window
    are refused (audited); hits do not count; another actor is unaffected; the
    window passing lifts the limit."""
    from tests.conftest import POLICIES

    clock = FixedClock(dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC))
    settings = VaultSettings.build(home=tmp_path / "v", policies=POLICIES,
                                   search_miss_limit=3, search_miss_window_seconds=600)
    with Vault.init(settings=settings, clock=clock) as vault:
        vault.roles.assign("crm", "crm_service", tenant="acme")
        vault.roles.assign("crm2", "crm_service", tenant="acme")
        vault.put(CRM, "customers", customer(5), purpose="account_management")
        for n in range(2):
            assert vault.find(CRM, "customers", purpose="account_management",
                              email=f"guess{n}@example.com") == []
        assert vault.find(CRM, "customers", purpose="account_management",
                          email="li.wei5@example.cn")  # a hit does not count
        assert vault.find(CRM, "customers", purpose="account_management",
                          email="guess2@example.com") == []  # the third miss
        before = last_seq(vault)
        with pytest.raises(AccessDenied, match="search"):
            vault.find(CRM, "customers", purpose="account_management",
                       email="li.wei5@example.cn")
        (entry,) = entries_after(vault, before)
        assert (entry.action, entry.decision, entry.reason) == (
            "search", "deny", "search_miss_limit")
        assert vault.find(Actor("crm2", "acme"), "customers", purpose="account_management",
                          email="other@example.com") == []
        clock.advance(dt.timedelta(seconds=601))
        assert vault.find(CRM, "customers", purpose="account_management",
                          email="li.wei5@example.cn")
        assert vault.audit_log.verify().ok
