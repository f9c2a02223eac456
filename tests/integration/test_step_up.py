"""Step-up in the library (issue 14): the settings say which actions need a verified
second factor (by default reading sensitive fields, exports, erasure, key, role and
policy administration); ``Actor.second_factor`` says whether the caller proved one.
The data path and the administrative services refuse without it (``StepUpRequired``,
audited as a denial), a read leaves the sensitive fields out and names them, and
every entry of a stepped-up call records the factor and its time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import POLICIES, ROLE_USERS
from tests.helpers import stepped_up
from vault import AccessDenied, Actor, ConfigError, SecondFactor, StepUpRequired, Vault
from vault.config import VaultSettings
from vault.errors import InvalidData
from vault.store.tables import AUDIT_LOG

CRM = Actor("crm", "acme")
DANA = Actor("dana", "acme")
SALLY = Actor("sally", "acme")
ADA = Actor("ada", "acme")
NATIONAL_ID = "110101199003077777"


def _customer() -> dict[str, Any]:
    return {"full_name": "Li Wei", "email": "li.wei@example.cn", "country": "CN",
            "national_id": NATIONAL_ID}


def _entries(vault: Vault, action: str) -> list[Any]:
    with vault.engine.connect() as conn:
        return list(conn.execute(select(
            AUDIT_LOG.c.actor, AUDIT_LOG.c.decision, AUDIT_LOG.c.reason, AUDIT_LOG.c.fields,
            AUDIT_LOG.c.context).where(AUDIT_LOG.c.action == action)
            .order_by(AUDIT_LOG.c.seq)).all())


def test_a_read_without_a_second_factor_leaves_sensitive_fields_out_and_names_them(
        vault: Vault) -> None:
    """The DPO may read national_id: without step-up it is absent (not masked, not
    empty) and named in ``Record.step_up``; with step-up it comes in clear."""
    rid = vault.put(CRM, "customers", _customer(), purpose="account_management")
    plain = vault.get(DANA, "customers", rid, purpose="dsar_fulfilment")
    assert "national_id" not in plain.data and plain.data["full_name"] == "Li Wei"
    assert plain.step_up == {"national_id"}
    assert "national_id" not in plain.withheld | plain.masked
    assert NATIONAL_ID not in repr(plain)
    (read,) = [e for e in _entries(vault, "read") if e.actor == "dana"]
    assert "national_id" not in json.loads(read.fields)  # not disclosed, not audited as read
    strong = vault.get(stepped_up(DANA), "customers", rid, purpose="dsar_fulfilment")
    assert strong.data["national_id"] == NATIONAL_ID and strong.step_up == frozenset()
    # A sales rep may not read it at all: nothing to step up for.
    assert vault.get(SALLY, "customers", rid, purpose="sales_outreach").step_up == frozenset()
    many = vault.get_many(DANA, "customers", [rid], purpose="dsar_fulfilment")
    assert many[0].step_up == {"national_id"}


def test_asking_for_a_sensitive_field_by_name_is_refused_and_audited(vault: Vault) -> None:
    """fields=["national_id"] without step-up: StepUpRequired (an AccessDenied with
    reason step_up_required), audited as a denied read naming the field."""
    rid = vault.put(CRM, "customers", _customer(), purpose="account_management")
    with pytest.raises(StepUpRequired) as caught:
        vault.get(DANA, "customers", rid, purpose="dsar_fulfilment",
                  fields=["full_name", "national_id"])
    assert isinstance(caught.value, AccessDenied)
    assert caught.value.code == "step_up_required" and caught.value.reason == "step_up_required"
    assert caught.value.action == "read_sensitive"
    assert NATIONAL_ID not in str(caught.value)
    denied = [e for e in _entries(vault, "read") if e.decision == "deny"]
    assert [(e.actor, e.reason, json.loads(e.fields)) for e in denied] == [
        ("dana", "step_up_required", ["national_id"])]
    got = vault.get(stepped_up(DANA), "customers", rid, purpose="dsar_fulfilment",
                    fields=["national_id"])
    assert got.data == {"national_id": NATIONAL_ID}


def test_searching_on_a_sensitive_field_needs_a_second_factor(vault: Vault) -> None:
    """A search answers whether a record holds a value: on a sensitive field it is
    refused without step-up; found records leave the sensitive fields out."""
    rid = vault.put(CRM, "customers", _customer(), purpose="account_management")
    with pytest.raises(StepUpRequired):
        vault.find(DANA, "customers", purpose="dsar_fulfilment", national_id=NATIONAL_ID)
    (hit,) = vault.find(DANA, "customers", purpose="dsar_fulfilment", email="li.wei@example.cn")
    assert hit.id == rid and hit.step_up == {"national_id"} and "national_id" not in hit.data
    (strong,) = vault.find(stepped_up(DANA), "customers", purpose="dsar_fulfilment",
                           national_id=NATIONAL_ID)
    assert strong.data["national_id"] == NATIONAL_ID


def test_erasure_needs_a_second_factor(vault: Vault) -> None:
    """Deleting a record and destroying a subject's key are erasures: refused (and
    audited) without step-up, nothing removed; done with it."""
    rid = vault.put(CRM, "customers", _customer(), purpose="account_management")
    with pytest.raises(StepUpRequired):
        vault.delete(DANA, "customers", rid, purpose="dsar_fulfilment")
    assert vault.get(CRM, "customers", rid, purpose="account_management").id == rid
    assert [(e.actor, e.decision, e.reason) for e in _entries(vault, "delete")] == [
        ("dana", "deny", "step_up_required")]
    subject = vault.get(CRM, "customers", rid, purpose="account_management").subject_id
    with pytest.raises(StepUpRequired):
        vault.keys.destroy(subject, tenant="acme", actor=DANA)
    assert vault.get(CRM, "customers", rid, purpose="account_management").id == rid
    vault.delete(stepped_up(DANA), "customers", rid, purpose="dsar_fulfilment")
    assert [e.decision for e in _entries(vault, "delete")] == ["deny", "allow"]


def test_role_key_and_policy_administration_need_a_second_factor(vault: Vault) -> None:
    """The administrator changes roles, rotates keys and changes the policy only
    stepped up; the refusals are audited; the policy is still asked first (a
    non-administrator gets access_denied, factor or not)."""
    with pytest.raises(StepUpRequired):
        vault.roles.assign("newbie", "analyst", tenant="acme", actor=ADA)
    with pytest.raises(StepUpRequired):
        vault.roles.revoke("andy", "analyst", tenant="acme", actor=ADA)
    with pytest.raises(StepUpRequired):
        vault.keys.rotate(actor=ADA)
    with pytest.raises(StepUpRequired):
        vault.policy.add_rule("analyst", "acme", "customers.country", "read", "analytics",
                              "deny", actor=ADA)
    with pytest.raises(AccessDenied) as caught:
        vault.roles.assign("newbie", "analyst", tenant="acme", actor=stepped_up(SALLY))
    assert not isinstance(caught.value, StepUpRequired)
    assert ("newbie", "analyst", "acme") not in [
        (a.user, a.role, a.tenant) for a in vault.roles.list(tenant="acme")]
    # Refused as the administrative action the policy decides (policy.admin, keys.rotate).
    refused = [(e.actor, e.reason) for e in _entries(vault, "policy.admin")]
    assert refused == [("ada", "step_up_required")] * 3 + [("sally", "access_denied")]
    assert [(e.actor, e.reason) for e in _entries(vault, "keys.rotate")] == [
        ("ada", "step_up_required")]
    strong = stepped_up(ADA)
    assert vault.roles.assign("newbie", "analyst", tenant="acme", actor=strong) is True
    before = vault.keys.status().current_version
    assert vault.keys.rotate(actor=strong).new_version == before + 1
    assert vault.policy.add_rule("analyst", "acme", "customers.country", "read", "analytics",
                                 "deny", actor=strong) is True


def test_a_stepped_up_call_records_the_factor_and_its_time(vault: Vault) -> None:
    """Every audit entry of a stepped-up actor's call names the factor and when it
    was proved (the data path, its refusals, and the administrative services)."""
    at = dt.datetime(2026, 12, 4, 9, 30, tzinfo=dt.UTC)
    dana, ada = stepped_up(DANA, at), stepped_up(ADA, at, method="jwt:otp")
    rid = vault.put(CRM, "customers", _customer(), purpose="account_management")
    vault.get(dana, "customers", rid, purpose="dsar_fulfilment")
    with pytest.raises(AccessDenied):
        vault.get(dana, "customers", rid, purpose="marketing")
    vault.roles.assign("newbie", "analyst", tenant="acme", actor=ada)
    reads = [e for e in _entries(vault, "read") if e.actor == "dana"]
    assert [e.decision for e in reads] == ["allow", "deny"]
    for entry in reads:
        assert json.loads(entry.context) == {"factor": "totp", "factor_at": at.isoformat()}
    (assign,) = [e for e in _entries(vault, "roles.assign") if e.actor == "ada"]
    assert json.loads(assign.context) == {"factor": "jwt:otp", "factor_at": at.isoformat()}
    # Without a factor the context names none.
    vault.get(CRM, "customers", rid, purpose="account_management")
    crm_read = [e for e in _entries(vault, "read") if e.actor == "crm"][-1]
    assert "factor" not in json.loads(crm_read.context)


def test_the_local_operator_is_exempt(vault: Vault) -> None:
    """``actor=None`` (who holds the key file) needs no second factor; audited as system."""
    rid = vault.put(CRM, "customers", _customer(), purpose="account_management")
    assert vault.roles.assign("newbie", "analyst", tenant="acme") is True
    vault.keys.rotate()
    subject = vault.get(CRM, "customers", rid, purpose="account_management").subject_id
    vault.keys.destroy(subject, tenant="acme")
    assert [(e.actor, e.decision) for e in _entries(vault, "keys.destroy")] == [
        ("system", "allow")]


def test_dsar_exports_and_erasure_need_a_second_factor(vault: Vault, tmp_path: Path) -> None:
    """Processing an access request (an export) or an erasure request: refused
    without step-up before anything moves; done with it."""
    data = {"full_name": "Zed Canary", "email": "zed@example.com", "phone": "+14155550123",
            "birth_date": "1980-05-06", "country": "US"}
    rid = vault.put(CRM, "customers", data, purpose="account_management",
                    jurisdiction="US-CA")
    subject = vault.get(CRM, "customers", rid, purpose="account_management").subject_id
    for kind in ("access", "erasure"):
        request = vault.dsar.submit(DANA, kind, tenant="acme", subject_id=subject)
        if request.state.value == "received":
            request = vault.dsar.verify(DANA, request.id, tenant="acme", evidence={
                k: data[k] for k in ("email", "phone", "birth_date")}, declaration="decl-1")
        with pytest.raises(StepUpRequired) as caught:
            vault.dsar.process(DANA, request.id, tenant="acme", out=tmp_path / kind)
        assert caught.value.action == ("export" if kind == "access" else "erase")
        assert vault.dsar.get(DANA, request.id, tenant="acme").state == request.state
        assert not (tmp_path / kind).exists()
        done = vault.dsar.process(stepped_up(DANA), request.id, tenant="acme",
                                  out=tmp_path / kind)
        assert done.state.value == "completed"
    refused = [e for e in _entries(vault, "dsar.process") if e.decision == "deny"]
    assert [e.reason for e in refused] == ["step_up_required", "step_up_required"]


@pytest.fixture
def lax(sqlite_settings: VaultSettings) -> Any:
    """A vault whose settings turn step-up off (``step_up=()``)."""
    settings = VaultSettings.build(**{**sqlite_settings.model_dump(exclude_none=True),
                                      "step_up": ()})
    v = Vault.init(settings=settings)
    for user, role in ROLE_USERS.items():
        v.roles.assign(user, role, tenant="acme")
    yield v
    v.close()


def test_the_settings_decide_which_actions_need_it(lax: Vault) -> None:
    """With ``step_up=()`` nothing needs a second factor; an unknown action name is
    a configuration error."""
    rid = lax.put(CRM, "customers", _customer(), purpose="account_management")
    record = lax.get(DANA, "customers", rid, purpose="dsar_fulfilment")
    assert record.data["national_id"] == NATIONAL_ID and record.step_up == frozenset()
    assert lax.roles.assign("newbie", "analyst", tenant="acme", actor=ADA) is True
    lax.delete(DANA, "customers", rid, purpose="dsar_fulfilment")
    with pytest.raises(ConfigError):
        VaultSettings.build(home="x", policies=POLICIES, step_up=("read_everything",))
    only_keys = VaultSettings.build(home="x", policies=POLICIES, step_up=("keys",))
    assert only_keys.step_up == ("keys",)


def test_an_old_factor_does_not_count_when_the_settings_bound_its_age(
        sqlite_settings: VaultSettings) -> None:
    """``step_up_max_age_seconds``: a factor proved longer ago (or in the future) is refused."""
    settings = VaultSettings.build(**{**sqlite_settings.model_dump(exclude_none=True),
                                      "step_up_max_age_seconds": 600})
    with Vault.init(settings=settings) as v:
        v.roles.assign("ada", "admin", tenant="acme")
        now = dt.datetime.now(dt.UTC)
        with pytest.raises(StepUpRequired):
            v.roles.assign("x", "analyst", tenant="acme",
                           actor=stepped_up(ADA, now - dt.timedelta(minutes=11)))
        with pytest.raises(StepUpRequired):
            v.roles.assign("x", "analyst", tenant="acme",
                           actor=stepped_up(ADA, now + dt.timedelta(minutes=5)))
        assert v.roles.assign("x", "analyst", tenant="acme",
                              actor=stepped_up(ADA, now - dt.timedelta(minutes=9))) is True


def test_the_second_factor_is_a_checked_value() -> None:
    """A factor needs a short method code and an aware time; an actor with one stays
    frozen and hashable."""
    at = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
    with pytest.raises(InvalidData):
        SecondFactor("totp", dt.datetime(2026, 12, 4))  # naive
    with pytest.raises(InvalidData):
        SecondFactor("Not a code!", at)
    with pytest.raises(InvalidData):
        Actor("dana", "acme", second_factor="totp")  # type: ignore[arg-type]
    strong = Actor("dana", "acme", second_factor=SecondFactor("totp", at))
    assert hash(strong) != hash(DANA) and strong != DANA
    assert strong == dataclasses.replace(DANA, second_factor=SecondFactor("totp", at))
    with pytest.raises(dataclasses.FrozenInstanceError):
        strong.second_factor = None  # type: ignore[misc]


def test_an_operator_steps_up_with_a_totp_code_of_its_person_key(vault: Vault) -> None:
    """identity.step_up: a code of the actor's own enrolled person key gives an actor
    with a ``totp`` factor (accepted once); without an enrolment, refused and audited."""
    import pyotp

    from vault.identity import AuthenticationFailed

    with pytest.raises(AuthenticationFailed):
        vault.identity.step_up(DANA, "123456")
    assert [(e.actor, e.reason) for e in _entries(vault, "identity.authenticate")] == [
        ("dana", "totp_not_enrolled")]
    vault.identity.create_key("dana-key", actor_id="dana", tenant="acme", kind="person")
    totp = pyotp.parse_uri(vault.identity.enrol_totp("dana-key"))
    code = totp.now()  # type: ignore[attr-defined]
    strong = vault.identity.step_up(DANA, code)
    assert strong.second_factor is not None and strong.second_factor.method == "totp"
    assert (strong.id, strong.tenant) == (DANA.id, DANA.tenant)
    with pytest.raises(AuthenticationFailed):
        vault.identity.step_up(DANA, code)  # a replay
    with pytest.raises(AuthenticationFailed):  # another actor's code is not its own
        vault.identity.step_up(SALLY, code)
    rid = vault.put(CRM, "customers", _customer(), purpose="account_management")
    vault.delete(strong, "customers", rid, purpose="dsar_fulfilment")
