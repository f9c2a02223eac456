"""Consent, jurisdictions and restriction enforced in the data path, per regime,
on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from tests.helpers import stepped_up
from vault import (
    AccessDenied,
    Actor,
    Clock,
    ConsentRequired,
    InvalidData,
    NotFound,
    SubjectRestricted,
    TransferRefused,
    Vault,
)
from vault.consent import ConsentScope, ConsentStatus, replay
from vault.errors import InvalidReceipt, UnknownPurpose
from vault.store.models import AuditEntryRow

from .. import helpers

# With a second factor (step-up): these tests read sensitive fields and erase, and
# are about consent; test_step_up.py is about the second factor.
CRM = stepped_up(helpers.CRM)
MAYA = stepped_up(helpers.MAYA)
DANA = stepped_up(helpers.DANA)
SAM = stepped_up(helpers.SAM)


def customer(n: int = 0, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "full_name": f"Kim Doe {n}", "email": f"kim{n}@example.com",
        "phone": "+14155550100", "country": "US", "preferred_language": "en",
        "marketing_segment": "vip", "national_id": "123456789",
    }
    data.update(over)
    return data


def plain(n: int) -> dict[str, Any]:
    """Only fields of the categories marketing notice v1 names (identity, contact, marketing)."""
    return {k: customer(n)[k] for k in ("full_name", "email", "marketing_segment")}


def new_subject(vault: Vault, sid: str, jurisdiction: str | None) -> str:
    return vault.put(CRM, "customers", customer(), purpose="account_management",
                     subject_id=sid, jurisdiction=jurisdiction)


def grant(vault: Vault, sid: str, purpose: str = "marketing", *, notice: str = "marketing",
          version: int = 1, scope: str = "general", **kw: Any) -> Any:
    return vault.consent.grant(sid, purpose, tenant="acme", notice_id=notice,
                               notice_version=version, scope=scope, source="web-shop", **kw)


def last_audit(vault: Vault) -> Any:
    with vault.engine.connect() as conn:
        return conn.execute(select(AuditEntryRow.__table__)
                            .order_by(AuditEntryRow.seq.desc()).limit(1)).one()


# ------------------------------------------------------------------ consent model per regime

# (jurisdiction, consent events before the read, marketing read allowed?)
MARKETING = [
    ("DE", [], False),                                   # GDPR: opt-in, nothing given
    ("DE", ["grant"], True),
    ("DE", ["grant", "withdraw"], False),
    ("DE", ["grant", "withdraw", "grant"], True),
    ("DE", ["refuse"], False),
    ("EU", ["grant", "expire"], False),
    ("CN", [], False),                                   # PIPL: opt-in
    ("CN", ["grant"], True),
    ("US-CA", [], True),                                 # CCPA: opt-out model
    ("US-CA", ["withdraw"], False),
    ("US-CA", ["refuse"], False),
    ("US-CA", ["withdraw", "grant"], True),
    (None, [], False),                                   # default: conservative opt-in
    ("BR", ["grant"], True),
]


@pytest.mark.parametrize(("jurisdiction", "events", "allowed"), MARKETING)
def test_marketing_consent_model_per_regime(vault: Vault, jurisdiction: str | None,
                                            events: list[str], allowed: bool) -> None:
    """marketing is opt-in under GDPR, PIPL and the default profile, opt-out under CCPA."""
    rid = new_subject(vault, "s1", jurisdiction)
    for kind in events:
        if kind == "grant":
            grant(vault, "s1")
        else:
            getattr(vault.consent, kind)("s1", "marketing", tenant="acme")
    if allowed:
        assert vault.get(MAYA, "customers", rid, purpose="marketing").data["email"]
        return
    with pytest.raises(ConsentRequired) as info:
        vault.get(MAYA, "customers", rid, purpose="marketing")
    assert info.value.code == "consent_required"
    entry = last_audit(vault)
    assert (entry.action, entry.decision, entry.actor) == ("read", "deny", "maya")
    assert entry.reason.split(":")[0] in ("consent_required", "opted_out")
    assert vault.pseudonym("acme", "s1") in entry.subjects


@pytest.mark.parametrize(("purpose", "jurisdiction"), [
    ("account_management", "DE"), ("account_management", "CN"), ("account_management", None),
    ("customer_support", "CN"), ("sales_outreach", "EU"), ("analytics", "CN"),
])
def test_non_consent_bases_need_no_consent(vault: Vault, purpose: str,
                                           jurisdiction: str | None) -> None:
    """contract / legitimate-interest / notice purposes run without any consent."""
    rid = new_subject(vault, "s1", jurisdiction)
    reader = {"account_management": CRM, "customer_support": SAM,
              "sales_outreach": Actor("sally", "acme"), "analytics": Actor("andy", "acme")}
    assert vault.get(reader[purpose], "customers", rid, purpose=purpose).data


def test_ccpa_sale_and_sharing_run_until_opt_out(vault: Vault) -> None:
    """CCPA: sale and sharing allowed until the consumer opts out; then refused."""
    vault.policy.add_rule("marketing", "acme", "customers.email", "read", "sale")
    rid = new_subject(vault, "ca", "US-CA")
    assert vault.get(MAYA, "customers", rid, purpose="sale").data == {"email": "kim0@example.com"}
    vault.consent.withdraw("ca", "sale", tenant="acme", method="web_form", source="dns-link")
    with pytest.raises(ConsentRequired) as info:
        vault.get(MAYA, "customers", rid, purpose="sale")
    assert info.value.reason == "opted_out:general"


def test_gdpr_sale_needs_opt_in(vault: Vault) -> None:
    """The same sale purpose is opt-in for an EU subject."""
    vault.policy.add_rule("marketing", "acme", "customers.email", "read", "sale")
    rid = new_subject(vault, "eu", "FR")
    with pytest.raises(ConsentRequired):
        vault.get(MAYA, "customers", rid, purpose="sale")
    grant(vault, "eu", "sale", notice="data_sale")
    assert vault.get(MAYA, "customers", rid, purpose="sale").data


def test_unknown_purpose_is_refused_by_reads_and_writes(vault: Vault) -> None:
    """A purpose the registry does not know is refused (and audited) before anything."""
    rid = new_subject(vault, "s1", "DE")
    with pytest.raises(UnknownPurpose):
        vault.get(CRM, "customers", rid, purpose="profiling")
    with pytest.raises(UnknownPurpose):
        vault.put(CRM, "customers", customer(), purpose="profiling")
    assert last_audit(vault).decision == "deny"


# ------------------------------------------------------------------ writes

def test_write_for_consent_purpose_needs_consent_and_is_all_or_nothing(vault: Vault) -> None:
    """put_many for marketing is refused whole if one subject lacks consent."""
    vault.policy.add_rule("marketing", "acme", "customers.*", "write", "marketing")
    new_subject(vault, "a", "DE")
    new_subject(vault, "b", "DE")
    grant(vault, "a")
    before = vault.subject_records("acme", "a") + vault.subject_records("acme", "b")
    with pytest.raises(ConsentRequired) as info:
        vault.put_many(MAYA, "customers", [plain(1), plain(2)], purpose="marketing",
                       subject_ids=["a", "b"])
    assert info.value.subjects == 1
    entry = last_audit(vault)  # before subject_records, whose listing is audited too
    after = vault.subject_records("acme", "a") + vault.subject_records("acme", "b")
    assert after == before
    assert (entry.action, entry.decision) == ("write", "deny")
    assert vault.pseudonym("acme", "b") in entry.subjects
    grant(vault, "b")
    assert len(vault.put_many(MAYA, "customers", [plain(1), plain(2)],
                              purpose="marketing", subject_ids=["a", "b"])) == 2
    with pytest.raises(ConsentRequired) as info:  # the national id needs explicit consent
        vault.put(MAYA, "customers", {**plain(3), "national_id": "123456789"},
                  purpose="marketing", subject_id="a")
    assert info.value.scope == "sensitive"


def test_update_checks_consent(vault: Vault) -> None:
    """update for a consent-based purpose is refused without consent."""
    vault.policy.add_rule("marketing", "acme", "customers.marketing_segment", "write",
                          "marketing")
    rid = new_subject(vault, "s1", "CN")
    with pytest.raises(ConsentRequired):
        vault.update(MAYA, "customers", rid, {"marketing_segment": "new"}, purpose="marketing")
    grant(vault, "s1")
    vault.update(MAYA, "customers", rid, {"marketing_segment": "new"}, purpose="marketing")
    assert vault.get(MAYA, "customers", rid, purpose="marketing").data["marketing_segment"] \
        == "new"


# ------------------------------------------------------------------ batches

def test_get_many_refuses_whole_batch_and_find_withholds(vault: Vault) -> None:
    """get_many is all or nothing; find returns only the subjects that consented."""
    ids = {sid: new_subject(vault, sid, "DE") for sid in ("a", "b", "c")}
    grant(vault, "a")
    grant(vault, "c")
    with pytest.raises(ConsentRequired) as info:
        vault.get_many(MAYA, "customers", list(ids.values()), purpose="marketing")
    assert info.value.subjects == 1
    found = vault.find(MAYA, "customers", purpose="marketing", email="kim0@example.com")
    assert sorted(r.subject_id for r in found) == ["a", "c"]
    entry = last_audit(vault)
    assert (entry.action, entry.decision) == ("search", "deny")
    assert vault.pseudonym("acme", "b") in entry.subjects
    assert ids["b"] in entry.record_ids


def test_consent_lookup_is_batched(vault: Vault) -> None:
    """get_many of 1,200 records looks consent up in a few queries, not one per record."""
    rids = vault.put_many(CRM, "customers", [customer(n) for n in range(1200)],
                          purpose="account_management", jurisdiction="US-CA")
    statements: list[str] = []

    from sqlalchemy import event

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "consent_state" in statement:
            statements.append(statement)

    event.listen(vault.engine, "before_cursor_execute", count)
    try:
        records = vault.get_many(MAYA, "customers", rids, purpose="marketing")
    finally:
        event.remove(vault.engine, "before_cursor_execute", count)
    assert len(records) == 1200
    assert 1 <= len(statements) <= 3


# ------------------------------------------------------------------ PIPL separate consent

@pytest.fixture
def marketing_reads_national_id(vault: Vault) -> Vault:
    vault.policy.add_rule("marketing", "acme", "customers.national_id", "read", "marketing")
    return vault


@pytest.mark.parametrize(("jurisdiction", "needs_separate"), [
    ("CN", True), ("DE", True), ("US-CA", False), (None, True),
])
def test_sensitive_fields_need_separate_consent(marketing_reads_national_id: Vault,
                                                jurisdiction: str | None,
                                                needs_separate: bool) -> None:
    """PIPL Art. 29 (and GDPR explicit consent): a sensitive field needs its own consent."""
    vault = marketing_reads_national_id
    rid = new_subject(vault, "s1", jurisdiction)
    if jurisdiction != "US-CA":
        grant(vault, "s1")
    assert vault.get(MAYA, "customers", rid, purpose="marketing", fields=["email"]).data
    if not needs_separate:
        assert vault.get(MAYA, "customers", rid, purpose="marketing",
                         fields=["national_id"]).data
        return
    with pytest.raises(ConsentRequired) as info:
        vault.get(MAYA, "customers", rid, purpose="marketing", fields=["national_id"])
    assert info.value.scope == "sensitive"
    grant(vault, "s1", notice="separate_sensitive", scope="sensitive")
    assert vault.get(MAYA, "customers", rid, purpose="marketing",
                     fields=["national_id"]).data["national_id"] == "123456789"


def test_pipl_sensitive_under_contract_or_legal_obligation_is_exempt(vault: Vault) -> None:
    """PIPL: account management (contract) and the DPO's requests need no separate consent."""
    rid = new_subject(vault, "s1", "CN")
    assert vault.get(DANA, "customers", rid, purpose="dsar_fulfilment",
                     fields=["national_id"]).data


def test_pipl_providing_to_another_handler_needs_separate_consent(vault: Vault) -> None:
    """PIPL Art. 23: an actor providing data to another handler needs the separate consent."""
    rid = new_subject(vault, "s1", "CN")
    partner = Actor("crm", "acme", recipient="partner-co")
    with pytest.raises(ConsentRequired) as info:
        vault.get(partner, "customers", rid, purpose="account_management", fields=["email"])
    assert info.value.scope == "provide_to_third_party"
    grant(vault, "s1", "account_management", notice="separate_transfer",
          scope="provide_to_third_party")
    assert vault.get(partner, "customers", rid, purpose="account_management",
                     fields=["email"]).data
    gdpr = new_subject(vault, "s2", "DE")
    assert vault.get(partner, "customers", gdpr, purpose="account_management",
                     fields=["email"]).data


# ------------------------------------------------------------------ cross-border

def test_cross_border_per_regime(vault: Vault) -> None:
    """Transfers: same area passes; GDPR needs a mechanism; PIPL a mechanism and consent;
    CCPA has no rule; a refusal is TransferRefused, audited."""
    eu = new_subject(vault, "eu", "DE")
    cn = new_subject(vault, "cn", "CN")
    ca = new_subject(vault, "ca", "US-CA")
    in_fr = Actor("crm", "acme", region="FR")
    in_us = Actor("crm", "acme", region="US")
    in_jp = Actor("crm", "acme", region="JP")
    assert vault.get(in_fr, "customers", eu, purpose="account_management").data  # same area
    with pytest.raises(TransferRefused) as info:
        vault.get(in_us, "customers", eu, purpose="account_management")
    assert info.value.reason == "transfer_refused"
    entry = last_audit(vault)
    assert (entry.decision, entry.reason) == ("deny", "transfer_refused")
    before = last_audit(vault).seq
    assert vault.get(in_jp, "customers", eu, purpose="account_management").data  # adequacy
    with vault.engine.connect() as conn:
        transfer = conn.execute(select(AuditEntryRow.__table__).where(
            AuditEntryRow.seq > before, AuditEntryRow.action == "transfer")).one()
    assert transfer.reason == "adequacy:to:JP"
    assert vault.get(in_us, "customers", ca, purpose="account_management").data  # US-CA in US
    assert vault.get(in_jp, "customers", ca, purpose="account_management").data  # CCPA: free
    with pytest.raises(TransferRefused):  # PIPL: no CAC mechanism in place
        vault.get(in_us, "customers", cn, purpose="account_management")


def test_cross_border_arrangement_and_pipl_separate_consent(vault: Vault,
                                                            edited: Edited) -> None:
    """With a CAC standard contract in place, a PIPL transfer still needs separate consent."""
    vault = edited("regimes.pipl.cross_border", "arrangements = []", (
        'arrangements = [{ destinations = ["US"], mechanism = "cac_standard_contract", '
        'reference = "CAC-SC-2026-1" }]'))
    cn = new_subject(vault, "cn", "CN")
    in_us = Actor("crm", "acme", region="US")
    with pytest.raises(ConsentRequired) as info:
        vault.get(in_us, "customers", cn, purpose="account_management")
    assert info.value.scope == "cross_border"
    grant(vault, "cn", "account_management", notice="separate_transfer", scope="cross_border")
    assert vault.get(in_us, "customers", cn, purpose="account_management").data
    assert last_audit(vault).reason == "cac_standard_contract:to:US"


Edited = Callable[..., Vault]


@pytest.fixture
def edited(vault: Vault, tmp_path: Path) -> Iterator[Edited]:
    """``edited(section, old, new, ...)``: the vault reopened with a copy of its
    policies in which ``old`` (first after the ``[section]`` header of
    ``jurisdictions.toml``) reads ``new``; ``clock=`` reopens it on that clock."""
    opened: list[Vault] = []

    def reopen(*edit: str, clock: Clock | None = None) -> Vault:
        folder = tmp_path / f"policies-{len(opened)}"
        shutil.copytree(vault.settings.resolved_policies, folder)
        for section, old, new in zip(edit[::3], edit[1::3], edit[2::3], strict=True):
            path = folder / "jurisdictions.toml"
            text = path.read_text(encoding="utf-8")
            at = text.index(old, text.index(f"[{section}]\n"))
            path.write_text(text[:at] + new + text[at + len(old):], encoding="utf-8")
        opened.append(Vault.open(
            settings=vault.settings.model_copy(update={"policies": folder}), clock=clock))
        return opened[-1]

    yield reopen
    for v in opened:
        v.close()


def test_localisation_refuses_every_transfer_even_with_an_arrangement(
        vault: Vault, edited: Edited) -> None:
    """PIPL Art. 40 (rule = localise): data of a CN subject does not leave CN, whatever
    arrangement or consent is in place; inside CN it is read as usual. Audited."""
    vault = edited(
        "regimes.pipl.cross_border", 'rule = "mechanism"', 'rule = "localise"',
        "regimes.pipl.cross_border", "arrangements = []",
        'arrangements = [{ destinations = ["*"], mechanism = "cac_assessment", '
        'reference = "CAC-SA-1" }]')
    cn = new_subject(vault, "cn", "CN")
    grant(vault, "cn", "account_management", notice="separate_transfer", scope="cross_border")
    with pytest.raises(TransferRefused) as info:
        vault.get(Actor("crm", "acme", region="US"), "customers", cn,
                  purpose="account_management")
    assert info.value.reason == "localisation_required"
    entry = last_audit(vault)
    assert (entry.decision, entry.reason) == ("deny", "localisation_required")
    assert vault.get(Actor("crm", "acme", region="CN"), "customers", cn,
                     purpose="account_management").data


# ------------------------------------------------------------------ restriction

@pytest.mark.parametrize("jurisdiction", ["DE", "CN", "US-CA"])
def test_restricted_subject_only_for_restricted_use_purposes(vault: Vault,
                                                             jurisdiction: str) -> None:
    """GDPR Art. 18 / PIPL Art. 44: while restricted, only storage, legal claims and
    request purposes pass; lifting restores processing. Both calls are audited."""
    rid = new_subject(vault, "s1", jurisdiction)
    info = vault.subjects.restrict("s1", tenant="acme", reason="gdpr_18_1_a", actor=DANA)
    assert info.restricted
    assert last_audit(vault).action == "subjects.restrict"
    with pytest.raises(SubjectRestricted):
        vault.get(CRM, "customers", rid, purpose="account_management")
    with pytest.raises(SubjectRestricted):
        vault.update(CRM, "customers", rid, {"phone": "+14155550101"},
                     purpose="account_management")
    with pytest.raises(SubjectRestricted):
        vault.put(CRM, "customers", customer(), purpose="account_management", subject_id="s1")
    assert vault.get(DANA, "customers", rid, purpose="dsar_fulfilment").data
    assert vault.get(CRM, "customers", rid, purpose="legal_obligation",
                     fields=["national_id"]).data
    vault.subjects.lift_restriction("s1", tenant="acme", actor=DANA)
    assert vault.get(CRM, "customers", rid, purpose="account_management").data


def test_restriction_needs_dsar_permission(vault: Vault) -> None:
    """Only an actor allowed dsar.process may restrict (refusal audited)."""
    new_subject(vault, "s1", "DE")
    with pytest.raises(AccessDenied):
        vault.subjects.restrict("s1", tenant="acme", actor=MAYA)
    assert last_audit(vault).decision == "deny"


def test_jurisdiction_change_is_audited_and_changes_the_regime(vault: Vault) -> None:
    """Moving a subject from CA to DE switches marketing from opt-out to opt-in."""
    rid = new_subject(vault, "s1", "US-CA")
    assert vault.get(MAYA, "customers", rid, purpose="marketing").data
    info = vault.subjects.set_jurisdiction("s1", "DE", tenant="acme", actor=DANA)
    assert (info.jurisdiction, info.regime) == ("DE", "gdpr")
    entry = last_audit(vault)
    assert (entry.action, entry.reason) == ("subjects.jurisdiction", "ccpa>gdpr")
    with pytest.raises(ConsentRequired):
        vault.get(MAYA, "customers", rid, purpose="marketing")
    with pytest.raises(InvalidData):
        vault.subjects.set_jurisdiction("s1", "germany", tenant="acme")


def test_changing_a_regime_needs_its_own_privilege(vault: Vault) -> None:
    """consent.manage (crm_service records consents) is not enough to move a subject
    out of PIPL: relabelling CN -> US-CA would drop opt-in and localisation. The
    refusal is audited; the DPO's change records old and new regime and makes no
    consent appear in the ledger."""
    rid = new_subject(vault, "cn", "CN")
    with pytest.raises(AccessDenied):
        vault.subjects.set_jurisdiction("cn", "US-CA", tenant="acme", actor=CRM)
    entry = last_audit(vault)
    assert (entry.actor, entry.action, entry.decision) == (
        "crm", "subjects.jurisdiction", "deny")
    assert vault.subjects.get("cn", tenant="acme").regime == "pipl"
    with pytest.raises(ConsentRequired):
        vault.get(MAYA, "customers", rid, purpose="marketing")
    vault.subjects.set_jurisdiction("cn", "US-CA", tenant="acme", actor=DANA)
    assert (last_audit(vault).reason, vault.consent.history("cn", tenant="acme")) == (
        "pipl>ccpa", [])


def test_every_code_a_profile_claims_can_be_a_subjects_jurisdiction(vault: Vault) -> None:
    """EEA (three letters) is claimed by the GDPR profile: a subject can be created
    with it and moved to it."""
    new_subject(vault, "s1", "EEA")
    assert vault.subjects.get("s1", tenant="acme").regime == "gdpr"
    new_subject(vault, "s2", "US-CA")
    assert vault.subjects.set_jurisdiction("s2", "EEA", tenant="acme").regime == "gdpr"
    claimed = {code for regime in vault.jurisdictions.regimes
               for code in vault.jurisdictions.profile(regime).jurisdictions}
    for n, code in enumerate(sorted(claimed)):
        new_subject(vault, f"c{n}", code)


def test_a_write_naming_another_jurisdiction_for_a_known_subject_is_refused(
        vault: Vault) -> None:
    """The jurisdiction is recorded when the subject is created. A later write that
    names the same one (or none) is fine; one that names another is refused with a
    typed, audited error and stores nothing, instead of being silently ignored (the
    caller would believe the customer is under the other regime)."""
    new_subject(vault, "s1", "CN")
    with vault.engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM records")).scalar_one()
    vault.put(CRM, "customers", plain(1), purpose="account_management", subject_id="s1",
              jurisdiction="CN")
    vault.put(CRM, "customers", plain(2), purpose="account_management", subject_id="s1")
    with pytest.raises(InvalidData) as info:
        vault.put_many(CRM, "customers", [plain(3), plain(4)], purpose="account_management",
                       subject_ids=["new-one", "s1"], jurisdiction="DE")
    assert info.value.field == "jurisdiction"
    # Neither the subject nor its recorded jurisdiction (a writer may not read it) is
    # in the message; the refusal is attributed to the subject in the audit log.
    assert "CN" not in info.value.message and "s1" not in info.value.message
    entry = last_audit(vault)
    assert (entry.action, entry.decision) == ("write", "deny")
    assert json.loads(entry.subjects) == [vault.pseudonym("acme", "s1")]
    with vault.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM records")).scalar_one() == before + 2
        assert conn.execute(text("SELECT count(*) FROM subjects WHERE subject_id = 'new-one'")
                            ).scalar_one() == 0
    assert vault.subjects.get("s1", tenant="acme").jurisdiction == "CN"
    new_subject(vault, "s2", None)          # created without one: none is recorded
    with pytest.raises(InvalidData):
        vault.put(CRM, "customers", plain(5), purpose="account_management", subject_id="s2",
                  jurisdiction="US-CA")


def test_may_ask_again_waits_the_profiles_months_after_an_opt_out(vault: Vault,
                                                                  edited: Edited) -> None:
    """CCPA: after an opt-out of sale (GPC here), the business may not ask the consumer
    to opt back in for 12 months (reask_after_months); GDPR sets no wait. Reading it
    is audited like the consent state; a consent the subject gives on their own is
    still recorded during the wait."""
    from vault import FixedClock

    clock = FixedClock(dt.datetime(2026, 1, 31, 9, 0, tzinfo=dt.UTC))
    vault = edited(clock=clock)
    new_subject(vault, "ca", "US-CA")
    new_subject(vault, "de", "DE")
    assert vault.consent.may_ask("ca", "sale", tenant="acme").allowed  # no event yet
    vault.consent.apply_gpc("ca", source="web", tenant="acme")
    vault.consent.withdraw("de", "marketing", tenant="acme")
    ask = vault.consent.may_ask("ca", "sale", tenant="acme", actor=CRM)
    # 31 January + 12 months, in calendar terms
    assert (ask.allowed, ask.not_before) == (False, dt.datetime(2027, 1, 31, 9, 0,
                                                                tzinfo=dt.UTC))
    assert ask.status is ConsentStatus.WITHDRAWN
    entry = last_audit(vault)
    assert (entry.action, entry.actor) == ("consent.state", "crm")
    de = vault.consent.may_ask("de", "marketing", tenant="acme")
    assert (de.allowed, de.not_before, de.status) == (True, None, ConsentStatus.WITHDRAWN)
    clock.set(dt.datetime(2027, 1, 31, 8, 59, tzinfo=dt.UTC))
    assert not vault.consent.may_ask("ca", "sale", tenant="acme").allowed
    clock.set(dt.datetime(2027, 1, 31, 9, 0, tzinfo=dt.UTC))
    assert vault.consent.may_ask("ca", "sale", tenant="acme").allowed
    # the consumer opts back in on their own during a new wait: recorded, no wait left
    vault.consent.refuse("ca", "sharing", tenant="acme")
    assert not vault.consent.may_ask("ca", "sharing", tenant="acme").allowed
    grant(vault, "ca", "sharing", notice="data_sale")
    again = vault.consent.may_ask("ca", "sharing", tenant="acme")
    assert (again.allowed, again.not_before, again.status) == (
        True, None, ConsentStatus.GRANTED)
    with pytest.raises(UnknownPurpose):
        vault.consent.may_ask("ca", "no_such_purpose", tenant="acme")


# ------------------------------------------------------------------ GPC

def test_gpc_opts_out_of_sale_and_sharing_and_records_the_conflict(vault: Vault) -> None:
    """GPC after an opt-in: the opt-out applies anyway and the conflict is recorded."""
    vault.policy.add_rule("marketing", "acme", "customers.email", "read", "sale")
    rid = new_subject(vault, "ca", "US-CA")
    grant(vault, "ca", "sale", notice="data_sale")
    result = vault.consent.apply_gpc("ca", source="gateway", tenant="acme", actor=CRM)
    assert result.honoured
    assert sorted(e.purpose for e in result.events) == ["sale", "sharing"]
    assert all(e.method == "gpc" and e.kind == "withdraw" for e in result.events)
    assert result.conflicts == ("sale",)
    with pytest.raises(ConsentRequired):
        vault.get(MAYA, "customers", rid, purpose="sale")
    states = {s.purpose: s.status for s in vault.consent.state("ca", tenant="acme")}
    assert states == {"sale": ConsentStatus.WITHDRAWN, "sharing": ConsentStatus.WITHDRAWN}
    history = vault.consent.history("ca", tenant="acme")
    assert [e.conflict for e in history] == [None, "gpc_overrides_opt_in", None]
    with vault.engine.connect() as conn:
        gpc = conn.execute(select(AuditEntryRow.__table__).where(
            AuditEntryRow.action == "consent.gpc").order_by(AuditEntryRow.seq)).all()
    assert sorted((e.purpose, e.reason) for e in gpc) == [
        ("sale", "general:gpc:gpc_overrides_opt_in"), ("sharing", "general:gpc")]
    summary = vault.consent.summary(tenant="acme")
    assert (summary.gpc_signals, summary.gpc_conflicts) == (2, 1)


def test_gpc_under_a_profile_that_does_not_honour_it(vault: Vault, edited: Edited) -> None:
    """gpc.honour = false: nothing is recorded, the subject's opt-in stands, and the
    ignored signal is audited."""
    vault.policy.add_rule("marketing", "acme", "customers.email", "read", "sale")
    vault = edited("regimes.gdpr.gpc", "honour = true", "honour = false")
    rid = new_subject(vault, "eu", "DE")
    grant(vault, "eu", "sale", notice="data_sale")
    result = vault.consent.apply_gpc("eu", source="gateway", tenant="acme")
    assert (result.honoured, result.events, result.conflicts) == (False, (), ())
    assert [e.kind for e in vault.consent.history("eu", tenant="acme")] == ["grant"]
    assert vault.get(MAYA, "customers", rid, purpose="sale").data
    with vault.engine.connect() as conn:
        entry = conn.execute(select(AuditEntryRow.__table__).where(
            AuditEntryRow.action == "consent.gpc")).one()
    assert entry.reason == "ignored:gdpr"
    ca = new_subject(vault, "ca", "US-CA")
    assert vault.consent.apply_gpc("ca", source="gateway", tenant="acme").honoured
    with pytest.raises(ConsentRequired):
        vault.get(MAYA, "customers", ca, purpose="sale")


def test_gpc_on_unknown_subject_is_refused(vault: Vault) -> None:
    """A GPC signal for an unknown subject raises NotFound (audited), records nothing."""
    with pytest.raises(NotFound):
        vault.consent.apply_gpc("nobody", source="gateway", tenant="acme")
    assert last_audit(vault).decision == "deny"


# ------------------------------------------------------------------ re-consent

def test_new_notice_version_needs_reconsent_for_new_categories(vault: Vault) -> None:
    """PIPL Art. 14: a consent to marketing notice v1 does not cover v2's new categories."""
    vault.policy.add_rule("marketing", "acme", "customers.country", "read", "marketing")
    rid = new_subject(vault, "s1", "CN")
    grant(vault, "s1", version=1)
    assert vault.get(MAYA, "customers", rid, purpose="marketing", fields=["email"]).data
    with pytest.raises(ConsentRequired) as info:
        vault.get(MAYA, "customers", rid, purpose="marketing", fields=["email", "country"])
    assert info.value.reason == "reconsent_required:general"
    grant(vault, "s1", version=2)
    assert vault.get(MAYA, "customers", rid, purpose="marketing",
                     fields=["email", "country"]).data == {"email": "kim0@example.com",
                                                           "country": "US"}


def test_grant_validates_notice_scope_hash_and_expiry(vault: Vault) -> None:
    """Grants name a registered notice that covers the purpose; the hash must match."""
    new_subject(vault, "s1", "DE")
    with pytest.raises(InvalidData):
        grant(vault, "s1", notice="nonexistent")
    with pytest.raises(InvalidData):
        grant(vault, "s1", "sale")  # the marketing notice does not ask for sale
    with pytest.raises(InvalidData):
        grant(vault, "s1", scope="sensitive")  # nor for a separate consent
    with pytest.raises(InvalidData):
        grant(vault, "s1", notice_hash="0" * 64)
    with pytest.raises(InvalidData):
        grant(vault, "s1", expires_at=vault.clock.now() - dt.timedelta(days=1))
    with pytest.raises(NotFound):
        grant(vault, "ghost")
    event = grant(vault, "s1", notice_hash=vault.notices.get("marketing", 1).text_sha256)
    assert event.notice_hash == vault.notices.get("marketing", 1).text_sha256


def test_grant_with_expiry_lapses(vault: Vault, edited: Edited) -> None:
    """A grant past its expires_at no longer counts."""
    from vault import FixedClock

    clock = FixedClock(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    vault = edited(clock=clock)
    rid = new_subject(vault, "s1", "DE")
    grant(vault, "s1", expires_at=clock.now() + dt.timedelta(days=30))
    assert vault.get(MAYA, "customers", rid, purpose="marketing").data
    clock.advance(dt.timedelta(days=31))
    with pytest.raises(ConsentRequired):
        vault.get(MAYA, "customers", rid, purpose="marketing")


def test_consent_manage_permission(vault: Vault) -> None:
    """marketing may not record consents; the refusal is audited."""
    new_subject(vault, "s1", "DE")
    with pytest.raises(AccessDenied):
        grant(vault, "s1", actor=MAYA)
    assert last_audit(vault).decision == "deny"


# ------------------------------------------------------------------ PIPL Art. 47 hook

@pytest.mark.parametrize(("jurisdiction", "called"), [("CN", True), ("DE", False)])
def test_withdrawal_calls_erasure_hook_under_pipl(vault: Vault, monkeypatch: pytest.MonkeyPatch,
                                                  jurisdiction: str, called: bool) -> None:
    """A PIPL withdrawal calls the vault's withdrawal hook (proactive deletion)."""
    calls: list[tuple[str, str, str]] = []
    monkeypatch.setattr(vault.retention, "consent_withdrawn",
                        lambda conn, t, s, p, at, actor: calls.append((t, s, p)))
    new_subject(vault, "s1", jurisdiction)
    grant(vault, "s1")
    vault.consent.withdraw("s1", "marketing", tenant="acme")
    assert calls == ([("acme", "s1", "marketing")] if called else [])


# ------------------------------------------------------------------ ledger

def test_ledger_is_append_only_in_the_database(vault: Vault) -> None:
    """UPDATE and DELETE on consent_events are refused by the database itself."""
    new_subject(vault, "s1", "DE")
    grant(vault, "s1")
    for statement in ("UPDATE consent_events SET kind = 'withdraw'",
                      "DELETE FROM consent_events"):
        with pytest.raises(Exception, match="append-only"), vault.engine.begin() as conn:
            conn.execute(text(statement))
    if vault.engine.dialect.name == "postgresql":
        with pytest.raises(Exception, match="append-only"), vault.engine.begin() as conn:
            conn.execute(text("TRUNCATE consent_events"))
    assert [e.kind for e in vault.consent.history("s1", tenant="acme")] == ["grant"]


def test_state_equals_replay_and_history_is_kept(vault: Vault) -> None:
    """Each event leaves history untouched; the state table equals a replay."""
    new_subject(vault, "s1", "DE")
    grant(vault, "s1")
    vault.consent.withdraw("s1", "marketing", tenant="acme")
    grant(vault, "s1", version=2)
    grant(vault, "s1", notice="separate_sensitive", scope="sensitive")
    history = vault.consent.history("s1", tenant="acme")
    assert [(e.kind, e.notice_version) for e in history] == [
        ("grant", 1), ("withdraw", None), ("grant", 2), ("grant", 1)]
    assert all(e.regime == "gdpr" and e.jurisdiction == "DE" for e in history)
    states = {s.key: s for s in vault.consent.state("s1", tenant="acme")}
    assert states == dict(replay(history))
    assert {(k.purpose, k.scope) for k in states} == {("marketing", ConsentScope.GENERAL),
                                                     ("marketing", ConsentScope.SENSITIVE)}


# ------------------------------------------------------------------ receipts

def test_receipt_verifies_and_tampering_is_detected(vault: Vault) -> None:
    """Each event's receipt is signed; any change to it, or another key, fails."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    new_subject(vault, "s1", "CN")
    event = grant(vault, "s1", method="web_form", evidence="form-submission-77")
    receipt = vault.consent.receipt(event.event_id, tenant="acme")
    body = receipt["receipt"]
    assert body["consentReceiptID"] == event.event_id
    assert body["version"] == "KI-CR-v1.1.0"
    assert body["collectionMethod"] == "web_form"
    assert body["services"][0]["purposes"][0]["purpose"] == "marketing"
    assert body["record"]["notice"] == {"id": "marketing", "version": 1,
                                        "sha256": event.notice_hash}
    assert body["jurisdiction"] == "CN"
    assert vault.consent.verify_receipt(receipt) == body
    pem = vault.audit.export_public_key()
    assert vault.consent.verify_receipt(receipt, pem) == body

    tampered = {**receipt, "receipt": {**body, "piiPrincipalId": "s2"}}
    with pytest.raises(InvalidReceipt):
        vault.consent.verify_receipt(tampered)
    flipped = {**receipt, "signature": receipt["signature"][:-4] + "AAA="}
    with pytest.raises(InvalidReceipt):
        vault.consent.verify_receipt(flipped)
    other = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(InvalidReceipt):
        vault.consent.verify_receipt(receipt, other)
    with pytest.raises(InvalidReceipt):
        vault.consent.verify_receipt({"receipt": body})
    with pytest.raises(NotFound):
        vault.consent.receipt("0" * 32, tenant="acme")


def test_summary_counts_and_opt_out_rates(vault: Vault) -> None:
    """The summary counts states per regime and purpose, with opt-out rates."""
    for n, jurisdiction in enumerate(["DE", "DE", "DE", "DE", "US-CA"]):
        new_subject(vault, f"s{n}", jurisdiction)
    for n in range(4):
        grant(vault, f"s{n}")
    vault.consent.withdraw("s0", "marketing", tenant="acme")
    vault.consent.refuse("s4", "marketing", tenant="acme")
    summary = vault.consent.summary(tenant="acme")
    rows = {(r["regime"], r["purpose"]): r for r in summary.rows}
    assert rows[("gdpr", "marketing")]["granted"] == 3
    assert rows[("gdpr", "marketing")]["opt_out_rate"] == 0.25
    assert rows[("ccpa", "marketing")]["opt_out_rate"] == 1.0
    assert "gdpr,marketing,general,3,1,0,0,4,0.25" in summary.to_csv()
    assert '"schema_version": 1' in summary.to_json()


def test_restricted_subject_in_a_batch(vault: Vault) -> None:
    """A purpose that needs no consent still refuses a batch holding a restricted
    subject (get_many), and find withholds only that subject's records."""
    ids = {sid: new_subject(vault, sid, j) for sid, j in (("a", "DE"), ("b", "CN"), ("c", None))}
    vault.subjects.restrict("b", tenant="acme")
    with pytest.raises(SubjectRestricted) as info:
        vault.get_many(CRM, "customers", list(ids.values()), purpose="account_management")
    assert info.value.subjects == 1
    assert vault.pseudonym("acme", "b") in last_audit(vault).subjects
    found = vault.find(CRM, "customers", purpose="account_management", email="kim0@example.com")
    assert sorted(r.subject_id for r in found) == ["a", "c"]
    assert len(vault.get_many(DANA, "customers", list(ids.values()),
                              purpose="dsar_fulfilment")) == 3
