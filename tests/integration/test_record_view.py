"""The view of a record an actor may see, from one pass over its framed envelopes:
data in the requested order, masked and withheld names exactly, for every shape
of reader (all readable, some withheld, some masked) and of record (fields not
stored, fields requested explicitly)."""

from __future__ import annotations

from typing import Any

from vault import Actor, Vault
from vault.records.service import load_rows

CRM = Actor("crm", "acme")
SAM = Actor("sam", "acme")      # support_agent: 4 fields, phone masked
SALLY = Actor("sally", "acme")  # sales_rep: 5 fields, nothing masked

FULL: dict[str, Any] = {
    "full_name": "Li Wei", "email": "li.wei@example.cn", "phone": "+8613812348000",
    "postal_address": "1 Example Road\nBeijing", "birth_date": "1990-03-07",
    "national_id": "110101199003077777", "country": "CN", "preferred_language": "zh",
    "marketing_segment": "vip", "device_info": {"os": "Android 15"},
    "support_notes": "Asked about invoices.",
}
SOME = {k: FULL[k] for k in ("full_name", "email", "country", "support_notes")}


def test_every_reader_shape_of_a_full_and_a_partial_record(vault: Vault) -> None:
    full, some = vault.put_many(CRM, "customers", [FULL, SOME], purpose="account_management")

    # Everything stored readable but national_id (denied): withheld, the rest in order.
    crm = vault.get(CRM, "customers", full, purpose="account_management")
    assert list(crm.data) == [n for n in vault.schemas.get("customers").field_names
                              if n != "national_id"]
    assert crm.withheld == frozenset({"national_id"}) and crm.masked == frozenset()
    # A partial record: only what is stored, nothing withheld.
    crm_some = vault.get(CRM, "customers", some, purpose="account_management")
    assert crm_some.data == SOME and crm_some.withheld == frozenset()

    # sales_rep reads 5 fields, nothing masked: the other stored fields are withheld.
    sally = vault.get(SALLY, "customers", full, purpose="account_management")
    readable = ("full_name", "email", "phone", "country", "preferred_language")
    assert sally.data == {n: FULL[n] for n in readable}
    assert sally.withheld == frozenset(FULL) - set(readable)
    sally_some = vault.get(SALLY, "customers", some, purpose="account_management")
    assert sally_some.data == {"full_name": "Li Wei", "email": "li.wei@example.cn",
                               "country": "CN"}
    assert sally_some.withheld == frozenset({"support_notes"})

    # support_agent: phone masked, in the requested order with the readable fields.
    sam = vault.get(SAM, "customers", full, purpose="customer_support",
                    fields=["support_notes", "phone", "national_id", "full_name"])
    assert list(sam.data) == ["support_notes", "phone", "full_name"]
    assert sam.data["phone"] == "+86 138****8000" and sam.masked == frozenset({"phone"})
    assert sam.withheld == frozenset({"national_id"})
    # Requested but not stored: neither data nor withheld.
    sam_some = vault.get(SAM, "customers", some, purpose="customer_support",
                         fields=["phone", "support_notes", "postal_address"])
    assert sam_some.data == {"support_notes": "Asked about invoices."}
    assert sam_some.masked == frozenset() and sam_some.withheld == frozenset()


def test_load_rows_in_chunks_keeps_only_the_tenants_records(vault: Vault) -> None:
    """More ids than one chunk of either backend's statement (an IN list of 500 on
    SQLite, one array on PostgreSQL): every row comes back once, and another
    tenant's records are left out."""
    vault.roles.assign("crm", "crm_service", tenant="globex")
    people = [dict(SOME, email=f"p{n}@example.com") for n in range(1_200)]
    ours = vault.put_many(CRM, "customers", people, purpose="account_management")
    theirs = vault.put_many(Actor("crm", "globex"), "customers", people[:3],
                            purpose="account_management")
    with vault.engine.connect() as conn:
        rows = load_rows(conn, "acme", "customers", [*ours, *theirs, "no-such-id"])
    assert sorted(rows) == sorted(ours)
    assert all(rows[rid].id == rid and rows[rid].tenant == "acme" for rid in ours)
    got = vault.get_many(CRM, "customers", ours[::-1], purpose="account_management")
    assert [r.id for r in got] == ours[::-1]
    assert [dict(r.data) for r in got] == people[::-1]
