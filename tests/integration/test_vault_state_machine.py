"""A hypothesis state machine over a vault's life (issue 15, the matrix).

Rules: put, get, update, delete, find, consent grant and withdraw, erasure
(crypto-shredding), key rotation, a role given and taken away, verify. A plain
Python model says what must be true; after every step:

* an erased subject's records are unreadable (KeyDestroyed), and never found;
* an actor without a role never sees data (AccessDenied, nothing returned);
* every read adds one audit entry, every search at least one;
* found records are exactly the model's records with that e-mail;
* the consent state is the model's;
* and, in the ``verify`` rule and at the end, every chain verifies and every
  record's version is the audited one.

SQLite only (the data path is the same code on PostgreSQL, which the rest of
the suite runs); a modest number of examples keeps it to about a minute.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)
from sqlalchemy import func, select

from tests.helpers import stepped_up
from vault import AccessDenied, Actor, KeyDestroyed, NotFound, Vault, VaultSettings
from vault.store.models import AuditEntryRow

from ..conftest import REPO

PURPOSE = "account_management"
CRM = stepped_up(Actor("crm", "acme"))  # its deletes are erasures: a second factor
SUE = Actor("sue", "acme")
SUBJECTS = ("s1", "s2", "s3")
EMAILS = ("a@example.com", "b@example.com", "c@example.com")


def _entries(vault: Vault) -> int:
    with vault.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(AuditEntryRow)).scalar_one())


class VaultLife(RuleBasedStateMachine):
    records = Bundle("records")

    def __init__(self) -> None:
        super().__init__()
        self.home = Path(tempfile.mkdtemp(prefix="vault-life-"))
        self.vault = Vault.init(settings=VaultSettings.build(home=self.home / "v",
                                                             policies=REPO / "policies"))
        self.vault.roles.assign("crm", "crm_service", tenant="acme")
        self.model: dict[str, tuple[str, dict[str, Any]]] = {}
        self.erased: set[str] = set()
        self.consent: dict[str, bool] = {}
        self.sue_reads = False

    # ------------------------------------------------------------------ rules

    @precondition(lambda self: len(self.erased) < len(SUBJECTS))
    @rule(target=records, subject=st.sampled_from(SUBJECTS), email=st.sampled_from(EMAILS),
          name=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                       min_size=1, max_size=20).filter(str.strip))
    def put(self, subject: str, email: str, name: str) -> str:
        if subject in self.erased:
            with pytest.raises(KeyDestroyed):
                self.vault.put(CRM, "customers", {"full_name": name, "email": email},
                               purpose=PURPOSE, subject_id=subject, jurisdiction="US")
            return "absent"
        rid = self.vault.put(CRM, "customers", {"full_name": name, "email": email},
                             purpose=PURPOSE, subject_id=subject, jurisdiction="US")
        self.model[rid] = (subject, {"full_name": name.strip(), "email": email})
        return rid

    @rule(rid=records)
    def get(self, rid: str) -> None:
        before = _entries(self.vault)
        expected = self.model.get(rid)
        if expected is None:
            with pytest.raises(NotFound):
                self.vault.get(CRM, "customers", rid, purpose=PURPOSE)
        elif expected[0] in self.erased:
            with pytest.raises(KeyDestroyed):
                self.vault.get(CRM, "customers", rid, purpose=PURPOSE)
        else:
            got = self.vault.get(CRM, "customers", rid, purpose=PURPOSE)
            assert got.data == expected[1]
        assert _entries(self.vault) == before + 1

    @rule(rid=records)
    def get_as_sue(self, rid: str) -> None:
        before = _entries(self.vault)
        expected = self.model.get(rid)
        if self.sue_reads and expected is not None and expected[0] not in self.erased:
            got = self.vault.get(SUE, "customers", rid, purpose=PURPOSE,
                                 fields=["full_name"])
            assert got.data == {"full_name": expected[1]["full_name"]}
        else:
            with pytest.raises((AccessDenied, NotFound, KeyDestroyed)):
                self.vault.get(SUE, "customers", rid, purpose=PURPOSE,
                               fields=["full_name"])
        assert _entries(self.vault) == before + 1

    @rule(rid=records, email=st.sampled_from(EMAILS))
    def update(self, rid: str, email: str) -> None:
        expected = self.model.get(rid)
        if expected is None or expected[0] in self.erased:
            with pytest.raises((NotFound, KeyDestroyed)):
                self.vault.update(CRM, "customers", rid, {"email": email}, purpose=PURPOSE)
            return
        self.vault.update(CRM, "customers", rid, {"email": email}, purpose=PURPOSE)
        expected[1]["email"] = email

    @rule(rid=consumes(records))
    def delete(self, rid: str) -> None:
        if rid not in self.model:
            with pytest.raises(NotFound):
                self.vault.delete(CRM, "customers", rid, purpose=PURPOSE)
            return
        self.vault.delete(CRM, "customers", rid, purpose=PURPOSE)
        del self.model[rid]

    @rule(email=st.sampled_from(EMAILS))
    def find(self, email: str) -> None:
        before = _entries(self.vault)
        found = self.vault.find(CRM, "customers", purpose=PURPOSE, email=email)
        expected = {rid for rid, (sid, data) in self.model.items()
                    if data["email"] == email and sid not in self.erased}
        assert {r.id for r in found} == expected
        assert all(r.data["email"] == email for r in found)
        # Audited: the search, then the read of what it found (one entry per chain).
        assert before + 1 <= _entries(self.vault) <= before + 1 + len(found)

    @rule(subject=st.sampled_from(SUBJECTS), grant=st.booleans())
    def consent_change(self, subject: str, grant: bool) -> None:
        if subject in self.erased or not any(s == subject for s, _ in self.model.values()):
            return
        if grant:
            self.vault.consent.grant(subject, "marketing", tenant="acme",
                                     notice_id="marketing", notice_version=1)
        else:
            self.vault.consent.withdraw(subject, "marketing", tenant="acme")
        self.consent[subject] = grant

    @rule(subject=st.sampled_from(SUBJECTS))
    def erase(self, subject: str) -> None:
        self.vault.keys.destroy(subject, tenant="acme")
        self.erased.add(subject)

    @rule()
    def rotate(self) -> None:
        self.vault.keys.rotate()

    @rule(give=st.booleans())
    def sue_role(self, give: bool) -> None:
        if give:
            self.vault.roles.assign("sue", "sales_rep", tenant="acme")
        else:
            self.vault.roles.revoke("sue", "sales_rep", tenant="acme")
        self.sue_reads = give

    @rule()
    def verify(self) -> None:
        report = self.vault.audit.verify()
        assert report.ok, report

    # ------------------------------------------------------------------ invariants

    @invariant()
    def consent_is_the_model(self) -> None:
        for subject, granted in self.consent.items():
            if subject in self.erased:
                continue
            states = self.vault.consent.state(subject, tenant="acme")
            status = {s.purpose: s.status.value for s in states}.get("marketing")
            assert (status == "granted") == granted, (subject, status)

    def teardown(self) -> None:
        try:
            report = self.vault.audit.verify()
            assert report.ok, report
        finally:
            self.vault.close()
            shutil.rmtree(self.home, ignore_errors=True)


@pytest.mark.slow
def test_vault_life() -> None:
    machine = settings(max_examples=30, stateful_step_count=25, deadline=None,
                       suppress_health_check=[HealthCheck.too_slow])(VaultLife)
    machine.TestCase().runTest()
