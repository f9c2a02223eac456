"""The benchmark's customers: Faker people with 8 PII fields, 2 of them searchable.

Every value is generated in the canonical form Vault (and the careful CRM
peers) store it in: e-mail addresses as email-validator normalises them,
phone numbers in E.164, text stripped. So "decrypted value == input" is an
exact check of correctness, not of normalisation.
"""

from __future__ import annotations

from typing import Any

from vault.cli.demo import make_customers

__all__ = ["CONTACT_FIELDS", "FIELDS", "SEARCHABLE", "SENSITIVE_FIELDS", "customers",
           "scale_customers"]

#: The 8 fields every peer stores (of the 11 the `customers` collection declares).
FIELDS = (
    "full_name", "email", "phone", "postal_address", "birth_date", "country",
    "preferred_language", "support_notes",
)
#: The 2 of them with a blind index in Vault (an ordinary index in the plain peers).
SEARCHABLE = ("email", "phone")
#: The shapes' 8 fields with a sensitive one: national_id (PIPL Art. 28, searchable)
#: in place of preferred_language.
SENSITIVE_FIELDS = (
    "full_name", "email", "phone", "postal_address", "birth_date", "national_id", "country",
    "support_notes",
)
#: What the shapes' 3-field role reads.
CONTACT_FIELDS = ("full_name", "email", "phone")


def customers(count: int, *, seed: int = 7,
              fields: tuple[str, ...] = FIELDS) -> list[dict[str, str]]:
    """``count`` distinct customers (unique e-mail addresses) with ``fields``."""
    people = []
    for _jurisdiction, record in make_customers(count, seed=seed):
        person: dict[str, Any] = {name: record[name] for name in fields}
        person["postal_address"] = str(person["postal_address"]).strip()
        people.append(person)
    return people


def scale_customers(base: list[dict[str, str]], start: int, count: int) -> list[dict[str, str]]:
    """``count`` customers for the large data sets: the base people recycled, each
    with an e-mail address of its own (``n`` makes it unique), so a 1,000,000
    record data set costs no Faker time."""
    out = []
    size = len(base)
    for n in range(start, start + count):
        person = dict(base[n % size])
        local, domain = person["email"].split("@", 1)
        person["email"] = f"s{n}.{local}@{domain}"
        out.append(person)
    return out
