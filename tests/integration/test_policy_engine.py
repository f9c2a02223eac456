"""CasbinPolicyEngine: cache invalidation, deny-overrides, fail-closed, logging, input checks.

Runs on SQLite and, when ``VAULT_TEST_POSTGRES_URL`` is set, on PostgreSQL
(each test in a schema of its own, dropped afterwards).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, text
from structlog.testing import capture_logs

from vault.errors import ConfigError, InvalidData, InvalidTenant, PolicyError, UnknownRole
from vault.policy.engine import CasbinPolicyEngine
from vault.policy.tables import CasbinRule
from vault.store.engine import make_engine

from ..conftest import PG_URL, require_postgres
from ..helpers import CUSTOMER_FIELDS

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
MODEL = POLICIES / "model.conf"
DEFAULTS = POLICIES / "policy.csv"

FIELDS = CUSTOMER_FIELDS
SUPPORT_READ = frozenset({"full_name", "email", "device_info", "support_notes"})
CASBIN_LOGGERS = ("casbin", "casbin.enforcer", "casbin.policy", "casbin.role")

MakePolicy = Callable[..., CasbinPolicyEngine]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: an SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vault.db'}"
        return
    require_postgres()
    pg_url = PG_URL
    schema = f"vt_policy_{uuid.uuid4().hex[:12]}"
    admin = make_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_url else "?"
    try:
        yield f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def make_policy(db_url: str) -> Iterator[MakePolicy]:
    """Build engines on the test database, each with its own connection pool."""
    engines: list[Engine] = []

    def make(*, refresh_interval: float = 60.0, setup: bool = True) -> CasbinPolicyEngine:
        db = make_engine(db_url)
        engines.append(db)
        policy = CasbinPolicyEngine(db, MODEL, refresh_interval=refresh_interval)
        if setup:
            policy.create_schema()
            policy.load_defaults(DEFAULTS)
        return policy

    yield make
    for db in engines:
        db.dispose()


@pytest.fixture
def policy(make_policy: MakePolicy) -> CasbinPolicyEngine:
    """The default policy, with sam a support agent in tenant acme."""
    engine = make_policy()
    engine.assign_role("sam", "support_agent", tenant="acme")
    return engine


def support_read(
    policy: CasbinPolicyEngine, actor: str = "sam", tenant: str = "acme"
) -> frozenset[str]:
    """Fields ``actor`` may read for customer support in ``tenant``."""
    return policy.allowed_fields(actor, tenant, "customers", "read", "customer_support", FIELDS)


# -- cache invalidation --------------------------------------------------------------


def test_add_rule_applies_at_once_in_process(policy: CasbinPolicyEngine) -> None:
    """A rule added through the engine changes its (cached) decisions immediately."""
    assert support_read(policy) == SUPPORT_READ  # now cached
    before = policy.version
    assert policy.add_rule("support_agent", "*", "customers.phone", "read", "customer_support")
    assert support_read(policy) == SUPPORT_READ | {"phone"}
    assert policy.is_allowed("sam", "acme", "customers.phone", "read", "customer_support")
    assert policy.version == before + 1


def test_remove_rule_applies_at_once_in_process(policy: CasbinPolicyEngine) -> None:
    """A rule removed through the engine stops granting immediately."""
    assert policy.is_allowed("sam", "acme", "customers.email", "read", "customer_support")
    assert policy.remove_rule("support_agent", "*", "customers.email", "read", "customer_support")
    assert not policy.is_allowed("sam", "acme", "customers.email", "read", "customer_support")
    assert support_read(policy) == SUPPORT_READ - {"email"}


def test_adding_an_existing_rule_changes_nothing(policy: CasbinPolicyEngine) -> None:
    """add_rule of a present rule and remove_rule of an absent one return False, same version."""
    before = policy.version
    assert not policy.add_rule("support_agent", "*", "customers.email", "read", "customer_support")
    assert not policy.remove_rule("support_agent", "*", "customers.phone", "read", "marketing")
    assert policy.version == before


def test_decisions_are_served_from_cache(
    policy: CasbinPolicyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeated allowed_fields call does not ask Casbin again."""
    calls = []
    real = policy._enforcer.enforce

    def counting(*request: str) -> bool:
        calls.append(request)
        return bool(real(*request))

    monkeypatch.setattr(policy._enforcer, "enforce", counting)
    first = support_read(policy)
    assert len(calls) == len(FIELDS)
    assert support_read(policy) == first
    assert (
        policy.allowed_fields("sam", "acme", "customers", "read", "customer_support", list(FIELDS))
        == first
    )
    assert len(calls) == len(FIELDS)


def test_cached_record_decision_is_fast(policy: CasbinPolicyEngine) -> None:
    """All field decisions for one 10-field record take at most 10 microseconds once cached."""
    fields = FIELDS[:10]
    policy.allowed_fields("sam", "acme", "customers", "read", "customer_support", fields)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(1000):
            policy.allowed_fields("sam", "acme", "customers", "read", "customer_support", fields)
        best = min(best, (time.perf_counter() - start) / 1000)
    assert best <= 10e-6, f"{best * 1e6:.2f} us per cached decision"


def test_other_engine_sees_change_within_refresh_interval(make_policy: MakePolicy) -> None:
    """A change made through one engine reaches another engine on the same database."""
    writer = make_policy()
    reader = make_policy(refresh_interval=0.05)
    writer.assign_role("sam", "support_agent", tenant="acme")
    time.sleep(0.1)
    assert support_read(reader) == SUPPORT_READ
    writer.add_rule("support_agent", "*", "customers.phone", "read", "customer_support")
    time.sleep(0.1)
    assert support_read(reader) == SUPPORT_READ | {"phone"}
    assert reader.version == writer.version
    writer.revoke_role("sam", "support_agent", tenant="acme")
    time.sleep(0.1)
    assert support_read(reader) == frozenset()


def test_other_engine_keeps_cache_until_interval_or_refresh(make_policy: MakePolicy) -> None:
    """With a long refresh interval the cache stands until refresh() is called."""
    writer = make_policy()
    reader = make_policy(refresh_interval=60)
    writer.assign_role("sam", "support_agent", tenant="acme")
    reader.refresh()
    assert support_read(reader) == SUPPORT_READ
    writer.add_rule("support_agent", "*", "customers.phone", "read", "customer_support")
    time.sleep(0.1)
    assert support_read(reader) == SUPPORT_READ
    reader.refresh()
    assert support_read(reader) == SUPPORT_READ | {"phone"}


def test_change_in_another_process_is_seen(db_url: str, make_policy: MakePolicy) -> None:
    """A rule added by a separate Python process is seen after the refresh interval."""
    reader = make_policy(refresh_interval=0.05)
    reader.assign_role("sam", "support_agent", tenant="acme")
    assert support_read(reader) == SUPPORT_READ
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from vault.policy.engine import CasbinPolicyEngine\n"
        "from vault.store.engine import make_engine\n"
        "db = make_engine(sys.argv[1])\n"
        "engine = CasbinPolicyEngine(db, Path(sys.argv[2]))\n"
        "assert engine.add_rule('support_agent', 'acme', 'customers.phone', 'read',"
        " 'customer_support')\n"
        "db.dispose()\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", code, db_url, str(MODEL)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    time.sleep(0.1)
    assert support_read(reader) == SUPPORT_READ | {"phone"}


# -- semantics -----------------------------------------------------------------------


def test_deny_overrides_allow(policy: CasbinPolicyEngine) -> None:
    """A deny rule beats an allow for the same request, and lifting it restores the allow."""
    args = ("support_agent", "*", "customers.email", "read", "customer_support")
    assert policy.add_rule(*args, effect="deny")
    assert "email" not in support_read(policy)
    assert policy.remove_rule(*args, effect="deny")
    assert "email" in support_read(policy)


def test_wildcard_deny_in_one_tenant(policy: CasbinPolicyEngine) -> None:
    """A tenant-scoped deny on customers.* blocks every field there and nowhere else."""
    policy.assign_role("sam", "support_agent", tenant="globex")
    policy.add_rule("support_agent", "acme", "customers.*", "read", "*", effect="deny")
    assert support_read(policy, tenant="acme") == frozenset()
    assert support_read(policy, tenant="globex") == SUPPORT_READ


def test_tenant_scoped_allow_stays_in_its_tenant(policy: CasbinPolicyEngine) -> None:
    """An allow written for tenant acme grants nothing in globex."""
    policy.assign_role("sam", "support_agent", tenant="globex")
    policy.add_rule("support_agent", "acme", "customers.birth_date", "read", "customer_support")
    assert "birth_date" in support_read(policy, tenant="acme")
    assert "birth_date" not in support_read(policy, tenant="globex")


def test_actor_named_like_a_role_gets_nothing(policy: CasbinPolicyEngine) -> None:
    """An actor whose id is a role name does not inherit that role's rules."""
    assert not policy.is_allowed("admin", "acme", "policy", "policy.admin", "security")
    assert support_read(policy, actor="support_agent") == frozenset()


def test_assign_revoke_and_list(policy: CasbinPolicyEngine) -> None:
    """Assignments are per tenant; repeated assign/revoke return False."""
    assert not policy.assign_role("sam", "support_agent", tenant="acme")
    assert policy.assign_role("sam", "marketing", tenant="globex")
    assert policy.roles_for("sam", "acme") == ["support_agent"]
    assert policy.roles_for("sam", "globex") == ["marketing"]
    assert policy.list_assignments() == [
        ("sam", "marketing", "globex"),
        ("sam", "support_agent", "acme"),
    ]
    assert policy.list_assignments(tenant="acme") == [("sam", "support_agent", "acme")]
    assert policy.revoke_role("sam", "support_agent", tenant="acme")
    assert not policy.revoke_role("sam", "support_agent", tenant="acme")
    assert support_read(policy) == frozenset()


def test_rules_lists_stored_rules(policy: CasbinPolicyEngine) -> None:
    """rules() returns the role rules as 6-tuples, including new ones."""
    rule = ("analyst", "acme", "customers.country", "export", "analytics", "allow")
    assert rule not in policy.rules()
    policy.add_rule(*rule)
    assert rule in policy.rules()
    assert all(len(r) == 6 for r in policy.rules())


# -- fail closed ---------------------------------------------------------------------


def test_casbin_exception_is_a_denial(
    policy: CasbinPolicyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception inside Casbin denies, is logged without subjects/objects, and is not cached."""

    def boom(*_request: str) -> bool:
        raise RuntimeError("casbin exploded on user:sam customers.email")

    monkeypatch.setattr(policy._enforcer, "enforce", boom)
    with capture_logs() as logs:
        assert support_read(policy) == frozenset()
        assert not policy.is_allowed("sam", "acme", "customers.email", "read", "customer_support")
    errors = [entry for entry in logs if entry["event"] == "policy_engine_error"]
    assert len(errors) == 2
    assert errors[0]["error_type"] == "RuntimeError"
    flat = repr(logs)
    assert "sam" not in flat
    assert "customers" not in flat
    monkeypatch.undo()
    assert support_read(policy) == SUPPORT_READ


def test_unreadable_policy_is_a_denial(make_policy: MakePolicy) -> None:
    """Without policy tables, decisions deny and administration raises PolicyError."""
    policy = make_policy(setup=False)
    with capture_logs() as logs:
        assert support_read(policy) == frozenset()
        assert not policy.is_allowed("sam", "acme", "audit", "audit.read", "security")
    assert {entry["event"] for entry in logs} == {"policy_refresh_failed"}
    with pytest.raises(PolicyError):
        policy.known_roles()
    with pytest.raises(PolicyError):
        policy.refresh()


def test_malformed_stored_rule_denies_everything(make_policy: MakePolicy) -> None:
    """A rule row with a missing value makes Casbin fail, which denies every request."""
    policy = make_policy()
    policy.assign_role("sam", "support_agent", tenant="acme")
    assert support_read(policy) == SUPPORT_READ
    with policy._db.begin() as conn:
        conn.execute(
            insert(CasbinRule).values(
                ptype="p",
                v0="support_agent",
                v1="*",
                v2="customers.email",
                v3="read",
                v4="",
                v5="",
            )
        )
    policy.refresh(force=True)
    with capture_logs() as logs:
        assert support_read(policy) == frozenset()
    assert [entry["event"] for entry in logs] == ["policy_engine_error"]


# -- logging -------------------------------------------------------------------------


def test_engine_does_not_disable_other_loggers(make_policy: MakePolicy) -> None:
    """Building an engine and deciding leave other libraries' logging as it was."""
    other = logging.getLogger("some.other")
    other.setLevel(logging.INFO)
    try:
        policy = make_policy()
        policy.assign_role("sam", "support_agent", tenant="acme")
        support_read(policy)
        assert other.isEnabledFor(logging.INFO)
        assert not other.disabled
        assert logging.root.manager.disable == logging.NOTSET
        assert not logging.getLogger("sqlalchemy").disabled
    finally:
        other.setLevel(logging.NOTSET)


@pytest.mark.parametrize("reenabled", [False, True], ids=["as-built", "casbin-loggers-reenabled"])
def test_casbin_logs_no_subjects_or_objects(
    make_policy: MakePolicy,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    reenabled: bool,
) -> None:
    """Casbin emits no log record, even if the application's logging config re-enables it."""
    caplog.set_level(logging.DEBUG)
    for name in CASBIN_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    policy = make_policy()
    if reenabled:  # what logging.config.dictConfig(..., disable_existing_loggers=False) does
        for name in CASBIN_LOGGERS:
            monkeypatch.setattr(logging.getLogger(name), "disabled", False)
    policy.assign_role("canary-actor", "support_agent", tenant="acme")
    support_read(policy, actor="canary-actor")
    policy.is_allowed("canary-actor", "acme", "customers.national_id", "read", "marketing")
    policy.refresh(force=True)
    casbin_records = [r for r in caplog.records if r.name.split(".")[0] == "casbin"]
    assert casbin_records == []
    assert "canary-actor" not in caplog.text
    assert "customers.email" not in caplog.text


# -- input checks --------------------------------------------------------------------


def test_wildcard_tenant_is_invalid(policy: CasbinPolicyEngine) -> None:
    """Nobody can name the wildcard domain '*' (or a malformed tenant) in a request."""
    for tenant in ("*", "", "acme\n", "a b", "x" * 129):
        with pytest.raises(InvalidTenant):
            policy.allowed_fields("sam", tenant, "customers", "read", "customer_support", FIELDS)
        with pytest.raises(InvalidTenant):
            policy.is_allowed("sam", tenant, "audit", "audit.read", "security")
    with pytest.raises(InvalidTenant):
        policy.assign_role("sam", "support_agent", tenant="*")
    with pytest.raises(InvalidTenant):
        policy.roles_for("sam", "*")


def test_wildcard_actor_and_names_are_invalid(policy: CasbinPolicyEngine) -> None:
    """'*' as actor, collection, field, action or purpose is refused, not matched."""
    bad_calls: list[Callable[[], object]] = [
        lambda: policy.allowed_fields("*", "acme", "customers", "read", "customer_support", FIELDS),
        lambda: policy.allowed_fields("sam", "acme", "*", "read", "customer_support", FIELDS),
        lambda: policy.allowed_fields(
            "sam", "acme", "customers", "read", "customer_support", ("*",)
        ),
        lambda: policy.allowed_fields("sam", "acme", "customers", "*", "customer_support", FIELDS),
        lambda: policy.allowed_fields("sam", "acme", "customers", "read", "*", FIELDS),
        lambda: policy.allowed_fields(
            "sam", "acme", "customers", "read", "customer_support", "email"
        ),
        lambda: policy.is_allowed("sam", "acme", "customers.*", "read", "customer_support"),
        lambda: policy.assign_role("*", "support_agent", tenant="acme"),
    ]
    for call in bad_calls:
        with pytest.raises(InvalidData) as info:
            call()
        assert not isinstance(info.value, InvalidTenant)


def test_assign_unknown_role_raises(policy: CasbinPolicyEngine) -> None:
    """Assigning a role no rule is written for raises UnknownRole and stores nothing."""
    before = policy.version
    with pytest.raises(UnknownRole, match="overlord"):
        policy.assign_role("sam", "overlord", tenant="acme")
    assert policy.roles_for("sam", "acme") == ["support_agent"]
    assert policy.version == before


def test_add_rule_checks_values(policy: CasbinPolicyEngine) -> None:
    """add_rule refuses a bad effect, object or tenant."""
    with pytest.raises(InvalidData, match="effect"):
        policy.add_rule("analyst", "*", "customers.email", "read", "analytics", effect="maybe")
    with pytest.raises(InvalidData):
        policy.add_rule("analyst", "*", "customers.e*", "read", "analytics")
    with pytest.raises(InvalidTenant):
        policy.add_rule("analyst", "bad tenant", "customers.email", "read", "analytics")


def test_bad_model_file_is_config_error(make_policy: MakePolicy, tmp_path: Path) -> None:
    """A missing model file or one that is not Vault's model is a ConfigError naming it."""
    db = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        with pytest.raises(ConfigError, match=r"absent\.conf"):
            CasbinPolicyEngine(db, tmp_path / "absent.conf")
        acl = tmp_path / "acl.conf"
        acl.write_text(
            "[request_definition]\nr = sub, obj, act\n[policy_definition]\np = sub, obj, act\n"
            "[policy_effect]\ne = some(where (p.eft == allow))\n"
            "[matchers]\nm = r.sub == p.sub\n",
            encoding="utf-8",
        )
        with pytest.raises(ConfigError, match=r"acl\.conf"):
            CasbinPolicyEngine(db, acl)
    finally:
        db.dispose()


# -- defaults ------------------------------------------------------------------------


def test_load_defaults_once_then_replace(make_policy: MakePolicy) -> None:
    """Defaults load into an empty database only, unless replace=True (assignments kept)."""
    policy = make_policy(setup=False)
    policy.create_schema()
    policy.create_schema()  # idempotent
    loaded = policy.load_defaults(DEFAULTS)
    assert loaded == len(policy.rules()) > 0
    policy.assign_role("sam", "support_agent", tenant="acme")
    policy.add_rule("analyst", "*", "customers.email", "read", "analytics")
    assert policy.load_defaults(DEFAULTS) == 0
    assert policy.load_defaults(DEFAULTS, replace=True) == loaded
    assert ("analyst", "*", "customers.email", "read", "analytics", "allow") not in policy.rules()
    assert policy.roles_for("sam", "acme") == ["support_agent"]


@pytest.mark.parametrize(
    "bad_line",
    [
        "p, analyst, *, customers.email, read, analytics",
        "p, analyst, *, customers.email, read, analytics, maybe",
        "p, analyst, *, customers.e*il, read, analytics, allow",
        "p, analyst, not a tenant, customers.email, read, analytics, allow",
        "q, analyst, *, customers.email, read, analytics, allow",
        "g, sam, overlord, acme",
        "g, sam, analyst, *",
        "g, sam, analyst",
    ],
)
def test_load_defaults_rejects_malformed_line(
    make_policy: MakePolicy, tmp_path: Path, bad_line: str
) -> None:
    """A malformed line is a ConfigError naming file and line; nothing is stored."""
    csv = tmp_path / "policy.csv"
    csv.write_text(
        f"# comment\np, analyst, *, customers.country, read, analytics, allow\n{bad_line}\n",
        encoding="utf-8",
    )
    policy = make_policy(setup=False)
    policy.create_schema()
    with pytest.raises(ConfigError) as info:
        policy.load_defaults(csv)
    assert f"{csv}:3" in str(info.value)
    assert "sam" not in str(info.value)
    assert policy.rules() == []
    assert policy.version == 0


def test_load_defaults_rejects_empty_file(make_policy: MakePolicy, tmp_path: Path) -> None:
    """A policy file without rules is a ConfigError (it would deny everything)."""
    csv = tmp_path / "policy.csv"
    csv.write_text("# nothing\n\n", encoding="utf-8")
    policy = make_policy(setup=False)
    with pytest.raises(ConfigError, match="defines no rules"):
        policy.load_defaults(csv)


# -- concurrency ---------------------------------------------------------------------


def test_concurrent_decisions_and_changes(policy: CasbinPolicyEngine) -> None:
    """Threads deciding while another changes the policy only ever see a valid decision."""
    valid = {SUPPORT_READ, SUPPORT_READ | {"phone"}}
    seen: set[frozenset[str]] = set()
    failures: list[BaseException] = []
    stop = threading.Event()

    def decide() -> None:
        try:
            while not stop.is_set():
                seen.add(support_read(policy))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=decide) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(5):
            policy.add_rule("support_agent", "*", "customers.phone", "read", "customer_support")
            policy.remove_rule("support_agent", "*", "customers.phone", "read", "customer_support")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert seen
    assert seen <= valid
    assert support_read(policy) == SUPPORT_READ


# -- several engines in one process -------------------------------------------------


def test_engines_deciding_in_parallel_threads_never_fail_closed_by_accident(
        make_policy: MakePolicy) -> None:
    """Eight engines (one per open Vault) decide uncached requests at once; every answer
    is the policy's, none a spurious deny (pycasbin re-parses its matcher with
    ast.parse, which CPython 3.11 cannot run from two threads at once)."""
    engines = [make_policy(setup=n == 0) for n in range(8)]
    engines[0].assign_role("sam", "support_agent", tenant="acme")
    for engine in engines:
        engine.refresh(force=True)
    barrier = threading.Barrier(len(engines))
    wrong: list[tuple[int, int]] = []

    def run(n: int, engine: CasbinPolicyEngine) -> None:
        barrier.wait()
        for i in range(120):  # a new purpose spelling each time: always a cache miss
            purpose = "customer_support" if i % 2 == 0 else "marketing"
            got = engine.allowed_fields("sam", "acme", "customers", "read", purpose,
                                        (*FIELDS, f"extra_{n}_{i}"))
            if got != (SUPPORT_READ if purpose == "customer_support" else frozenset()):
                wrong.append((n, i))

    threads = [threading.Thread(target=run, args=(n, e)) for n, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert wrong == []
