"""The shipped policy grants exactly the role matrix below, and nothing else.

Every combination of role x field x action x purpose is checked against
``allowed_fields`` for a user holding the role in tenant ``acme``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator
from itertools import product
from pathlib import Path

import pytest

from vault.policy.engine import CasbinPolicyEngine
from vault.store.engine import make_engine

from ..helpers import CUSTOMER_FIELDS, PURPOSE_NAMES

POLICIES = Path(__file__).resolve().parents[2] / "policies"

FIELDS = CUSTOMER_FIELDS
ACTIONS = ("read", "read_masked", "write", "delete", "search", "export")
PURPOSES = PURPOSE_NAMES
Cell = tuple[str, str, str]  # (field, action, purpose)


def grant(fields: Iterable[str], actions: Iterable[str], purposes: Iterable[str]) -> set[Cell]:
    return set(product(fields, actions, purposes))


SUPPORT = ("customer_support", "account_management")

EXPECTED: dict[str, set[Cell]] = {
    # Runs the vault: policy, keys, audit trail. No personal data at all.
    "admin": set(),
    "sales_rep": grant(
        ("full_name", "email", "phone", "country", "preferred_language"),
        ("read", "write", "search"),
        ("account_management", "sales_outreach"),
    ),
    "support_agent": (
        grant(("full_name", "email", "device_info", "support_notes"), ("read",), SUPPORT)
        | grant(("phone",), ("read_masked",), SUPPORT)
        | grant(("email",), ("search",), SUPPORT)
        | grant(("support_notes", "device_info"), ("write",), SUPPORT)
    ),
    "marketing": (
        grant(("full_name", "email", "marketing_segment"), ("read",), ("marketing",))
        | grant(("email",), ("search",), ("marketing",))
    ),
    "analyst": grant(
        ("country", "preferred_language", "marketing_segment"), ("read",), ("analytics",)
    ),
    "dpo": grant(FIELDS, ("read", "write", "delete", "search", "export"), ("dsar_fulfilment",)),
    # Reads the audit trail; no personal data.
    "compliance_officer": set(),
    "crm_service": (
        (
            grant(FIELDS, ("read", "write", "search", "delete"), ("account_management",))
            - {("national_id", "read", "account_management"),
               ("national_id", "search", "account_management")}
        )
        | {("national_id", "read", "legal_obligation")}
    ),
}
ROLES = tuple(EXPECTED)

# Administrative (object, action) pairs each role holds, for any purpose.
EXPECTED_ADMIN: dict[str, set[tuple[str, str]]] = {
    "admin": {("policy", "policy.admin"), ("keys", "keys.rotate"), ("audit", "audit.read")},
    "sales_rep": set(),
    "support_agent": set(),
    "marketing": set(),
    "analyst": set(),
    "dpo": {("dsar", "dsar.process"), ("consent", "consent.manage")},
    "compliance_officer": {("audit", "audit.read")},
    "crm_service": {("consent", "consent.manage")},
}
ADMIN_PAIRS = (
    ("audit", "audit.read"),
    ("dsar", "dsar.process"),
    ("consent", "consent.manage"),
    ("keys", "keys.rotate"),
    ("policy", "policy.admin"),
)


def user_of(role: str) -> str:
    return f"user-{role}"


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CasbinPolicyEngine]:
    """The shipped policy on a fresh SQLite database, one user per role in ``acme``."""
    db = make_engine(f"sqlite:///{tmp_path_factory.mktemp('matrix') / 'vault.db'}")
    engine = CasbinPolicyEngine(db, POLICIES / "model.conf", refresh_interval=60)
    engine.create_schema()
    engine.load_defaults(POLICIES / "policy.csv")
    for role in ROLES:
        engine.assign_role(user_of(role), role, tenant="acme")
    yield engine
    db.dispose()


def test_matrix_covers_the_shipped_fields_and_purposes() -> None:
    """The matrix's field and purpose lists are those of the shipped schema and registry."""
    with (POLICIES / "collections" / "customers.toml").open("rb") as handle:
        assert tuple(tomllib.load(handle)["fields"]) == FIELDS
    with (POLICIES / "purposes.toml").open("rb") as handle:
        assert set(tomllib.load(handle)["purposes"]) == set(PURPOSES)


def test_policy_defines_exactly_the_eight_roles(policy: CasbinPolicyEngine) -> None:
    """known_roles() is the set of roles of the matrix."""
    assert policy.known_roles() == frozenset(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_role_gets_exactly_its_cells(policy: CasbinPolicyEngine, role: str) -> None:
    """Every field x action x purpose decision for the role matches the table."""
    wrong = []
    for action, purpose in product(ACTIONS, PURPOSES):
        got = policy.allowed_fields(user_of(role), "acme", "customers", action, purpose, FIELDS)
        want = {f for f, a, p in EXPECTED[role] if a == action and p == purpose}
        if got != want:
            wrong.append((action, purpose, sorted(got - want), sorted(want - got)))
    assert wrong == [], "(action, purpose, extra, missing)"


@pytest.mark.parametrize("role", ROLES)
def test_role_gets_exactly_its_admin_actions(policy: CasbinPolicyEngine, role: str) -> None:
    """Administrative actions are granted per the table, for any purpose."""
    for purpose in ("security", "account_management"):
        got = {
            pair
            for pair in ADMIN_PAIRS
            if policy.is_allowed(user_of(role), "acme", pair[0], pair[1], purpose)
        }
        assert got == EXPECTED_ADMIN[role], purpose


@pytest.mark.parametrize("role", ROLES)
def test_role_in_acme_gets_nothing_in_globex(policy: CasbinPolicyEngine, role: str) -> None:
    """A role held in tenant acme grants nothing in tenant globex."""
    for action, purpose in product(ACTIONS, PURPOSES):
        assert (
            policy.allowed_fields(user_of(role), "globex", "customers", action, purpose, FIELDS)
            == frozenset()
        ), (action, purpose)
    for obj, action in ADMIN_PAIRS:
        assert not policy.is_allowed(user_of(role), "globex", obj, action, "security")


def test_user_without_role_gets_nothing(policy: CasbinPolicyEngine) -> None:
    """A user with no role gets no field and no administrative action."""
    for action, purpose in product(ACTIONS, PURPOSES):
        assert (
            policy.allowed_fields("nobody", "acme", "customers", action, purpose, FIELDS)
            == frozenset()
        ), (action, purpose)
    for obj, action in ADMIN_PAIRS:
        assert not policy.is_allowed("nobody", "acme", obj, action, "security")


@pytest.mark.parametrize("role", ROLES)
def test_unknown_purpose_gets_nothing(policy: CasbinPolicyEngine, role: str) -> None:
    """No role reads or writes any field for a purpose the policy does not know."""
    for action in ACTIONS:
        assert (
            policy.allowed_fields(
                user_of(role), "acme", "customers", action, "world_domination", FIELDS
            )
            == frozenset()
        ), action


def test_crm_service_national_id_read_is_denied_even_under_wildcard(
    policy: CasbinPolicyEngine,
) -> None:
    """The explicit deny beats crm_service's customers.* allow, per field and per object."""
    assert not policy.is_allowed(
        user_of("crm_service"), "acme", "customers.national_id", "read", "account_management"
    )
    assert policy.is_allowed(
        user_of("crm_service"), "acme", "customers.email", "read", "account_management"
    )
    assert policy.is_allowed(
        user_of("crm_service"), "acme", "customers.national_id", "write", "account_management"
    )
