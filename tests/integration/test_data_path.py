"""The encrypted data path end to end, on SQLite and PostgreSQL, with each key
provider (the key file, a SoftHSM2 token, moto's KMS: see tests/conftest.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select, text

from tests.helpers import stepped_up
from vault import AccessDenied, Actor, InvalidData, NotFound, Vault
from vault.errors import (
    DecryptionError,
    LegalHoldActive,
    UnknownCollection,
    UnknownField,
    UnknownPurpose,
)
from vault.store.models import AuditEntryRow, BlindIndexRow, RecordRow

from ..helpers import ANDY, CRM, DANA, MAYA, SALLY, SAM

pytestmark = pytest.mark.key_providers


def customer(n: int = 0, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "full_name": f"Li Wei {n}",
        "email": f"li.wei{n}@example.cn",
        "phone": "+8613812348000",
        "postal_address": "1 Example Road\nBeijing",
        "birth_date": "1990-03-07",
        "national_id": "110101199003077777",
        "country": "CN",
        "preferred_language": "zh",
        "marketing_segment": "vip",
        "device_info": {"os": "Android 15"},
        "support_notes": "Asked about invoices.",
    }
    data.update(over)
    return data


def audit_rows(vault: Vault) -> list[Any]:
    with vault.engine.connect() as conn:
        return list(conn.execute(select(AuditEntryRow.__table__).order_by(AuditEntryRow.seq)).all())


def audit_count(vault: Vault) -> int:
    with vault.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(AuditEntryRow)).scalar_one())


def record_count(vault: Vault) -> int:
    with vault.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(RecordRow)).scalar_one())


def test_put_then_get_roundtrips_every_field(vault: Vault) -> None:
    """The CRM service stores a customer and reads back exactly what it wrote."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management",
                    jurisdiction="CN")
    crm_read = vault.get(CRM, "customers", rid, purpose="account_management")
    expected = customer()
    del expected["national_id"]  # crm_service is denied national_id outside legal_obligation
    assert crm_read.data == expected
    assert crm_read.withheld == frozenset({"national_id"})
    assert crm_read.masked == frozenset()


def test_fields_are_stored_encrypted(vault: Vault) -> None:
    """No plaintext value reaches the records table; each field is its own envelope."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    with vault.engine.connect() as conn:
        blob = conn.execute(select(RecordRow.envelopes).where(RecordRow.id == rid)).scalar_one()
    for value in ("Li Wei", "li.wei0@example.cn", "13812348000", "110101199003077777",
                  "Beijing", "Android"):
        assert value.encode() not in blob


def test_support_agent_sees_masked_phone_and_no_identity(vault: Vault) -> None:
    """support_agent: name, e-mail, masked phone, device_info, notes; nothing else."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    rec = vault.get(SAM, "customers", rid, purpose="customer_support")
    assert rec.data["phone"] == "+86 138****8000"
    assert rec.masked == frozenset({"phone"})
    assert set(rec.data) == {"full_name", "email", "phone", "device_info", "support_notes"}
    assert "national_id" in rec.withheld and "national_id" not in rec.data
    assert rec.data["email"] == "li.wei0@example.cn"


def test_purpose_limits_access(vault: Vault) -> None:
    """marketing may read for marketing, and gets nothing for another purpose."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management",
                    subject_id="cust-1")
    # marketing rests on consent (opt-in) for a subject of the default regime.
    vault.consent.grant("cust-1", "marketing", tenant="acme", notice_id="marketing",
                        notice_version=1)
    rec = vault.get(MAYA, "customers", rid, purpose="marketing")
    assert set(rec.data) == {"full_name", "email", "marketing_segment"}
    before = audit_count(vault)
    with pytest.raises(AccessDenied):
        vault.get(MAYA, "customers", rid, purpose="sales_outreach")
    denied = audit_rows(vault)[before:]
    assert [(r.action, r.decision, r.actor) for r in denied] == [("read", "deny", "maya")]


def test_analyst_sees_no_direct_identifiers(vault: Vault) -> None:
    """analyst gets country, language and segment for analytics only."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    rec = vault.get(ANDY, "customers", rid, purpose="analytics")
    assert rec.data == {"country": "CN", "preferred_language": "zh", "marketing_segment": "vip"}


def test_dpo_reads_everything_only_for_dsar(vault: Vault) -> None:
    """dpo reads every field for dsar_fulfilment and nothing for any other purpose."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    # national_id is sensitive: read in clear with a second factor only (step-up).
    assert vault.get(stepped_up(DANA), "customers", rid,
                     purpose="dsar_fulfilment").data == customer()
    with pytest.raises(AccessDenied):
        vault.get(DANA, "customers", rid, purpose="account_management")


def test_other_tenant_cannot_see_record(vault: Vault) -> None:
    """A record of tenant acme does not exist for the same actor id in tenant globex."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    vault.roles.assign("crm", "crm_service", tenant="globex")
    with pytest.raises(NotFound):
        vault.get(Actor("crm", "globex"), "customers", rid, purpose="account_management")


def test_unassigned_actor_is_denied_and_audited(vault: Vault) -> None:
    """Default deny: an actor with no role gets AccessDenied, and the denial is audited."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    stranger = Actor("mallory", "acme")
    before = audit_count(vault)
    with pytest.raises(AccessDenied) as denied:
        vault.get(stranger, "customers", rid, purpose="account_management")
    assert denied.value.reason == "no_role" and "vault roles assign" in str(denied.value.hint)
    with pytest.raises(AccessDenied):
        vault.put(stranger, "customers", customer(1), purpose="account_management")
    rows = audit_rows(vault)[before:]
    assert [(r.actor, r.action, r.decision, r.reason) for r in rows] == [
        ("mallory", "read", "deny", "no_role"),
        ("mallory", "write", "deny", "no_role"),
    ]
    assert record_count(vault) == 1


def test_find_by_blind_index(vault: Vault) -> None:
    """find matches normalised e-mail and phone through blind indexes."""
    ids = vault.put_many(CRM, "customers", [customer(n) for n in range(5)],
                         purpose="account_management")
    found = vault.find(SAM, "customers", purpose="customer_support", email="LI.WEI3@Example.CN")
    assert [r.id for r in found] == [ids[3]]
    by_phone = vault.find(CRM, "customers", purpose="account_management",
                          phone="+86 138 1234 8000")
    assert sorted(r.id for r in by_phone) == sorted(ids)
    assert vault.find(CRM, "customers", purpose="account_management",
                      email="nobody@example.com") == []


def test_blind_index_holds_no_plaintext(vault: Vault) -> None:
    """The blind-index table stores digests, not the normalised values (the tokens of
    the searchable fields and the verification-only digests of the verifiable ones)."""
    vault.put(CRM, "customers", customer(), purpose="account_management")
    with vault.engine.connect() as conn:
        rows = conn.execute(select(BlindIndexRow.field, BlindIndexRow.digest)).all()
    searchable = sorted(f for f, _ in rows if not f.startswith("verify:"))
    assert searchable == ["email", "national_id", "phone"]
    assert all(f.removeprefix("verify:") in ("full_name", "postal_address", "birth_date")
               for f, _ in rows if f.startswith("verify:"))
    for _, digest in rows:
        assert b"example" not in digest and b"+86" not in digest


def test_find_needs_search_permission(vault: Vault) -> None:
    """analyst may not search by e-mail."""
    vault.put(CRM, "customers", customer(), purpose="account_management")
    with pytest.raises(AccessDenied):
        vault.find(ANDY, "customers", purpose="analytics", email="li.wei0@example.cn")


def test_find_on_unsearchable_field_is_refused(vault: Vault) -> None:
    """Equality search only works on fields with a blind index."""
    with pytest.raises(InvalidData):
        vault.find(CRM, "customers", purpose="account_management", full_name="Li Wei 0")


def test_update_reencrypts_and_reindexes(vault: Vault) -> None:
    """update changes the value and the blind index; the old value is no longer found."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    vault.update(CRM, "customers", rid, {"email": "new@example.cn", "support_notes": None},
                 purpose="account_management")
    rec = vault.get(CRM, "customers", rid, purpose="account_management")
    assert rec.data["email"] == "new@example.cn"
    assert "support_notes" not in rec.data
    assert vault.find(CRM, "customers", purpose="account_management",
                      email="li.wei0@example.cn") == []
    assert [r.id for r in vault.find(CRM, "customers", purpose="account_management",
                                     email="NEW@example.cn")] == [rid]


def test_update_needs_write_on_each_field(vault: Vault) -> None:
    """support_agent may write support_notes but not email."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    vault.update(SAM, "customers", rid, {"support_notes": "Called back."},
                 purpose="customer_support")
    with pytest.raises(AccessDenied):
        vault.update(SAM, "customers", rid, {"email": "x@example.cn"}, purpose="customer_support")
    assert vault.get(CRM, "customers", rid, purpose="account_management").data["email"] == (
        "li.wei0@example.cn")


def test_delete_removes_record_and_index(vault: Vault) -> None:
    """delete removes the row and its blind-index entries; later reads are NotFound."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    with pytest.raises(AccessDenied):
        vault.delete(SAM, "customers", rid, purpose="customer_support")
    vault.delete(stepped_up(CRM), "customers", rid, purpose="account_management")  # erasure
    with pytest.raises(NotFound):
        vault.get(CRM, "customers", rid, purpose="account_management")
    with vault.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(BlindIndexRow)).scalar_one() == 0


def test_put_many_and_get_many_audit_one_entry_per_chain(vault: Vault) -> None:
    """A batch is one transaction; its audit entries name every record id, one per chain."""
    items = [customer(n) for n in range(40)]
    before = audit_count(vault)
    ids = vault.put_many(CRM, "customers", items, purpose="account_management")
    writes = audit_rows(vault)[before:]
    assert 1 <= len(writes) <= vault.audit_log.chains
    assert sorted(i for r in writes for i in json.loads(r.record_ids)) == sorted(ids)
    records = vault.get_many(SALLY, "customers", ids, purpose="sales_outreach")
    assert [r.id for r in records] == ids
    assert [r.data["email"] for r in records] == [c["email"] for c in items]
    assert all("postal_address" not in r.data for r in records)


def test_get_many_with_unknown_id_returns_nothing(vault: Vault) -> None:
    """get_many is all or nothing: one unknown id raises NotFound."""
    ids = vault.put_many(CRM, "customers", [customer(n) for n in range(3)],
                         purpose="account_management")
    with pytest.raises(NotFound):
        vault.get_many(CRM, "customers", [*ids, "f" * 32], purpose="account_management")


def test_same_subject_many_records(vault: Vault) -> None:
    """Records of one subject share its data key and subject id."""
    rid1 = vault.put(CRM, "customers", customer(1), purpose="account_management")
    subject = vault.get(CRM, "customers", rid1, purpose="account_management").subject_id
    rid2 = vault.put(CRM, "customers", customer(2), purpose="account_management",
                     subject_id=subject)
    assert vault.get(CRM, "customers", rid2, purpose="account_management").subject_id == subject
    assert set(vault.subject_records("acme", subject)) == {rid1, rid2}


# ------------------------------------------------------------------ bad input

BAD_INPUTS: list[tuple[str, dict[str, Any], type[Exception], str | None]] = [
    ("unknown field", customer(ssn="078-05-1120"), UnknownField, None),
    ("malformed email", customer(email="not-an-email-canary"), InvalidData, "email"),
    ("malformed phone", customer(phone="12345-canary"), InvalidData, "phone"),
    ("name too long", customer(full_name="canary" * 100), InvalidData, "full_name"),
    ("empty required", customer(full_name="   "), InvalidData, "full_name"),
    ("wrong type", customer(full_name=12345), InvalidData, "full_name"),
    ("bad enum", customer(marketing_segment="canary-segment"), InvalidData, "marketing_segment"),
    ("bad date", customer(birth_date="canary-date"), InvalidData, "birth_date"),
]


@pytest.mark.parametrize(("case", "data", "error", "field"), BAD_INPUTS,
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_typed_named_unechoed_and_audited(
    vault: Vault, case: str, data: dict[str, Any], error: type[Exception], field: str | None,
) -> None:
    """Bad input: typed error naming the field, value never echoed, nothing written, audited."""
    before = audit_count(vault)
    with pytest.raises(error) as info:
        vault.put(CRM, "customers", data, purpose="account_management")
    message = str(info.value)
    assert "canary" not in message and "078-05-1120" not in message
    if field is not None:
        assert field in message
        assert getattr(info.value, "field", None) == field
    assert record_count(vault) == 0
    rows = audit_rows(vault)[before:]
    assert len(rows) == 1 and rows[0].decision == "deny" and rows[0].action == "write"
    assert "canary" not in json.dumps([rows[0].fields, rows[0].reason])


def test_non_string_keys_and_non_mapping_refused(vault: Vault) -> None:
    """Non-string field names and non-mapping data are InvalidData; nothing is written."""
    with pytest.raises(InvalidData):
        vault.put(CRM, "customers", {1: "x", "full_name": "A"}, purpose="account_management")  # type: ignore[dict-item]
    with pytest.raises(InvalidData):
        vault.put(CRM, "customers", ["full_name"], purpose="account_management")  # type: ignore[arg-type]
    assert record_count(vault) == 0


def test_unknown_collection_and_purpose(vault: Vault) -> None:
    """Unknown collection and unknown purpose are typed errors, audited as denials."""
    before = audit_count(vault)
    with pytest.raises(UnknownCollection):
        vault.put(CRM, "leads", customer(), purpose="account_management")
    with pytest.raises(UnknownPurpose):
        vault.put(CRM, "customers", customer(), purpose="curiosity")
    rows = audit_rows(vault)[before:]
    assert [(r.reason, r.collection, r.purpose) for r in rows] == [
        ("unknown_collection", None, "account_management"),
        ("unknown_purpose", "customers", None),
    ]
    assert record_count(vault) == 0


def test_batch_with_one_bad_item_writes_nothing(vault: Vault) -> None:
    """put_many validates every item before writing any."""
    items = [customer(1), customer(2, email="broken"), customer(3)]
    with pytest.raises(InvalidData):
        vault.put_many(CRM, "customers", items, purpose="account_management")
    assert record_count(vault) == 0


def test_get_unknown_record_is_not_found_and_audited(vault: Vault) -> None:
    """Reading a missing record raises NotFound and leaves an audit entry."""
    before = audit_count(vault)
    with pytest.raises(NotFound):
        vault.get(CRM, "customers", "0" * 32, purpose="account_management")
    rows = audit_rows(vault)[before:]
    assert [(r.action, r.reason) for r in rows] == [("read", "not_found")]


def test_malformed_record_id_refused(vault: Vault) -> None:
    """A record id with odd characters is InvalidData, not a database error."""
    with pytest.raises(InvalidData):
        vault.get(CRM, "customers", "x' OR '1'='1", purpose="account_management")


# ------------------------------------------------------------------ tampering


def _envelopes(vault: Vault, rid: str) -> bytes:
    with vault.engine.connect() as conn:
        return bytes(conn.execute(select(RecordRow.envelopes).where(RecordRow.id == rid))
                     .scalar_one())


def _set_envelopes(vault: Vault, rid: str, blob: bytes) -> None:
    with vault.engine.begin() as conn:
        conn.execute(text("UPDATE records SET envelopes = :b WHERE id = :i"), {"b": blob, "i": rid})


def test_ciphertext_moved_to_another_record_fails(vault: Vault) -> None:
    """Copying one record's ciphertexts onto another record (same subject) fails to decrypt."""
    rid1 = vault.put(CRM, "customers", customer(1), purpose="account_management")
    subject = vault.get(CRM, "customers", rid1, purpose="account_management").subject_id
    rid2 = vault.put(CRM, "customers", customer(2), purpose="account_management",
                     subject_id=subject)
    _set_envelopes(vault, rid2, _envelopes(vault, rid1))
    with pytest.raises(DecryptionError):
        vault.get(CRM, "customers", rid2, purpose="account_management")


def test_ciphertext_moved_to_another_field_fails(vault: Vault) -> None:
    """Swapping the e-mail envelope into the name slot fails to decrypt."""
    from vault.crypto.framing import decode_envelopes, encode_envelopes

    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    envs = decode_envelopes(_envelopes(vault, rid))
    envs["full_name"], envs["email"] = envs["email"], envs["full_name"]
    _set_envelopes(vault, rid, encode_envelopes(envs))
    with pytest.raises(DecryptionError) as info:
        vault.get(CRM, "customers", rid, purpose="account_management")
    assert str(info.value) == "decryption failed"


def test_flipped_byte_in_stored_envelope_fails(vault: Vault) -> None:
    """A byte flipped in the stored ciphertext raises the opaque DecryptionError."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    blob = bytearray(_envelopes(vault, rid))
    blob[-1] ^= 0x01
    _set_envelopes(vault, rid, bytes(blob))
    with pytest.raises(DecryptionError):
        vault.get(CRM, "customers", rid, purpose="account_management")


def test_a_refusal_says_which_kind_and_how_to_fix_it(vault: Vault) -> None:
    """AccessDenied carries the reason code and a hint: a purpose no role of the actor
    allows on the collection, or only some fields; the same for a record that does not
    exist (the reason never says whether it does)."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    sam = Actor("sam", "acme")
    with pytest.raises(AccessDenied) as other_fields:
        vault.get(sam, "customers", rid, purpose="customer_support", fields=["national_id"])
    assert other_fields.value.reason == "field_not_allowed"
    assert "fields" in str(other_fields.value.hint)
    with pytest.raises(AccessDenied) as purpose:
        vault.get(sam, "customers", rid, purpose="sale")
    assert purpose.value.reason == "purpose_not_allowed"
    assert "purpose" in str(purpose.value.hint)
    missing = "0" * len(rid)
    with pytest.raises(AccessDenied) as absent:
        vault.get(sam, "customers", missing, purpose="sale")
    assert (absent.value.reason, absent.value.hint) == (purpose.value.reason,
                                                        purpose.value.hint)
    assert missing not in str(absent.value) and rid not in str(purpose.value)


def test_a_legal_hold_refusal_is_a_deny_with_its_reason(vault: Vault) -> None:
    """Deleting held data is refused as a deny (reason legal_hold), so that the denials
    report lists it, not as an error."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management",
                    subject_id="held-1")
    vault.holds.place("acme", "held-1", reason="LIT-1")
    with pytest.raises(LegalHoldActive) as held:
        vault.delete(stepped_up(DANA), "customers", rid, purpose="dsar_fulfilment")
    assert "holds list" in held.value.hint
    rows = vault.audit.report("denials", tenant="acme").rows
    assert [(r["action"], r["reason"], r["records"]) for r in rows] == [
        ("delete", "legal_hold", rid)]
