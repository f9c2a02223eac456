"""Smaller findings of the adversarial review (issue "Security hardening", item 16):
holds on unknown subjects, personal data in a hold's reason, and listing a
subject's records without authorisation or audit."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from vault import AccessDenied, Actor, NotFound, Vault
from vault.errors import InvalidData
from vault.store.models import AuditEntryRow

from .test_data_path import CRM, customer

DANA = Actor("dana", "acme")


def _last(vault: Vault) -> object:
    with vault.engine.connect() as conn:
        return conn.execute(select(AuditEntryRow.__table__)
                            .order_by(AuditEntryRow.seq.desc()).limit(1)).one()


def test_a_hold_on_a_subject_that_does_not_exist_is_refused(vault: Vault) -> None:
    """A typo in a subject id must not leave the real subject unprotected silently."""
    with pytest.raises(NotFound):
        vault.holds.place("acme", "no-such-subject", reason="LIT-1", actor=DANA)
    vault.put(CRM, "customers", customer(1), purpose="account_management", subject_id="s-1")
    assert vault.holds.place("acme", "s-1", reason="LIT-1", actor=DANA).subject_id == "s-1"
    assert vault.holds.place("acme", reason="LIT-2", actor=DANA).subject_id is None


@pytest.mark.parametrize("reason", ["ana.lopez@example.com", "call +49 30 1234567",
                                    "Ana <ana@example.com>"])
def test_a_hold_reason_is_a_reference_not_personal_data(vault: Vault, reason: str) -> None:
    """The reason is stored in clear and shown to whoever lists holds: an e-mail
    address or phone number is refused, without echoing it."""
    with pytest.raises(InvalidData) as info:
        vault.holds.place("acme", reason=reason, actor=DANA)
    assert reason not in str(info.value)


def test_listing_a_subjects_records_is_authorised_and_audited(vault: Vault) -> None:
    """subject_records names which records a person has: an access like any other."""
    rid = vault.put(CRM, "customers", customer(2), purpose="account_management",
                    subject_id="s-2")
    assert vault.subject_records("acme", "s-2", actor=DANA) == [rid]
    entry = _last(vault)
    assert (entry.actor, entry.action, entry.decision) == ("dana", "subjects.records", "allow")
    assert entry.subjects == f'["{vault.pseudonym("acme", "s-2")}"]'
    with pytest.raises(AccessDenied):
        vault.subject_records("acme", "s-2", actor=Actor("sam", "acme"))
    assert vault.subject_records("acme", "s-2") == [rid]  # the local operator
    assert _last(vault).actor == "system"
