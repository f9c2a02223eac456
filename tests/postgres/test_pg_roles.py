"""The PostgreSQL application role cannot rewrite the audit log, even with triggers off."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from vault import Actor, Vault, VaultSettings
from vault.errors import ConfigError
from vault.store.engine import make_engine
from vault.store.roles import grant_app_role, grant_keystore_role

from ..conftest import PG_URL, POLICIES
from ..integration.test_data_path import customer

pytestmark = pytest.mark.postgres

CRM = Actor("crm", "acme")


@pytest.fixture
def app_role() -> Iterator[str]:
    role = f"vault_app_{uuid.uuid4().hex[:8]}"
    yield role
    engine = make_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f'DROP OWNED BY "{role}"'))
        conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
    engine.dispose()


def _as_role(url: str, role: str) -> str:
    return url.replace("options=", f"options=-crole%3D{role}%20", 1)


def _owner_settings(pg_schemas: Any, tmp_path: Path) -> tuple[VaultSettings, str, str]:
    """Settings of a vault in two fresh schemas, connecting as their owner; and the
    two URLs (to connect as the app role with :func:`_as_role`)."""
    data_url = pg_schemas.url(pg_schemas.names[0])
    keys_url = pg_schemas.url(pg_schemas.names[1])
    return (VaultSettings.build(home=tmp_path / "v", policies=POLICIES,
                                database_url=data_url, keystore_url=keys_url),
            data_url, keys_url)


def test_app_role_works_but_cannot_touch_audit_history(pg_schemas: Any, tmp_path: Path,
                                                       app_role: str) -> None:
    settings, data_url, keys_url = _owner_settings(pg_schemas, tmp_path)
    with Vault.init(settings=settings) as vault:
        vault.roles.assign("crm", "crm_service", tenant="acme")
        grant_app_role(vault.engine, app_role)
        grant_keystore_role(vault.keystore.engine, app_role)

    app_settings = VaultSettings.build(
        home=tmp_path / "v", policies=POLICIES,
        database_url=_as_role(data_url, app_role), keystore_url=_as_role(keys_url, app_role))
    with Vault.open(settings=app_settings) as vault:
        with vault.engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == app_role
        rid = vault.put(CRM, "customers", customer(1), purpose="account_management")
        assert vault.get(CRM, "customers", rid, purpose="account_management").data
        assert vault.audit_log.verify().ok
        for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log",
                          "TRUNCATE audit_log", "ALTER TABLE audit_log DISABLE TRIGGER ALL",
                          "DROP TRIGGER audit_log_no_update_delete ON audit_log"):
            with pytest.raises(ProgrammingError) as info, vault.engine.begin() as conn:
                conn.execute(text(statement))
            assert getattr(info.value.orig, "sqlstate", None) == "42501", statement
        with pytest.raises(ProgrammingError), vault.keystore.engine.begin() as conn:
            conn.execute(text("DELETE FROM data_keys"))
        # Opening as another role is a configuration change (the URLs differ), which the
        # app role could record (INSERT) but cannot rewrite.
        with vault.engine.connect() as conn:
            changed = conn.execute(text("SELECT fields FROM audit_log "
                                        "WHERE action = 'config.change'")).scalars().all()
        assert changed == ['["setting:database_url","setting:keystore_url"]']
        for statement in ("UPDATE config_snapshots SET digest = 'x'",
                          "DELETE FROM config_snapshots", "TRUNCATE config_snapshots",
                          "ALTER TABLE config_snapshots DISABLE TRIGGER ALL"):
            with pytest.raises(ProgrammingError) as info, vault.engine.begin() as conn:
                conn.execute(text(statement))
            assert getattr(info.value.orig, "sqlstate", None) == "42501", statement


def test_roles_are_refused_on_sqlite_and_bad_names(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ConfigError):
        grant_app_role(engine, "vault_app")
    pg = make_engine(PG_URL)
    with pytest.raises(ConfigError):
        grant_app_role(pg, 'x"; DROP TABLE audit_log; --')
    pg.dispose()


def _privileges(engine: Any, role: str, table: str) -> set[str]:
    kinds = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    with engine.connect() as conn:
        return {k for k in kinds if conn.execute(
            text("SELECT has_table_privilege(:r, current_schema() || '.' || :t, :k)"),
            {"r": role, "t": table, "k": k}).scalar_one()}


def test_cli_init_postgres_roles_grants_only_select_and_insert_on_the_log(
        pg_schemas: Any, tmp_path: Path, app_role: str) -> None:
    """`vault init --postgres-roles ROLE` creates ROLE with exactly SELECT and INSERT on
    audit_log (checked in the catalogue: the triggers' refusal uses the same SQLSTATE as
    a missing privilege, so a refused UPDATE alone cannot tell the two apart)."""
    from typer.testing import CliRunner

    from vault.cli import app

    data_url = pg_schemas.url(pg_schemas.names[0])
    keys_url = pg_schemas.url(pg_schemas.names[1])
    result = CliRunner().invoke(app, [
        "init", "--home", str(tmp_path / "v"), "--database-url", data_url,
        "--keystore-url", keys_url, "--postgres-roles", app_role],
        env={"VAULT_POLICIES": str(POLICIES), "VAULT_APP_ROLE_PASSWORD": "s3cret-pw"})
    assert result.exit_code == 0, result.output
    assert f"app role   {app_role}" in result.output and "s3cret-pw" not in result.output
    data = make_engine(data_url)
    keys = make_engine(keys_url)
    try:
        assert _privileges(data, app_role, "audit_log") == {"SELECT", "INSERT"}
        assert _privileges(data, app_role, "audit_heads") == {"SELECT", "UPDATE"}
        assert _privileges(data, app_role, "consent_events") == {"SELECT", "INSERT"}
        assert _privileges(data, app_role, "config_snapshots") == {"SELECT", "INSERT"}
        assert _privileges(keys, app_role, "data_keys") == {"SELECT", "INSERT", "UPDATE"}
        with data.connect() as conn:
            owner = conn.execute(text(
                "SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename = 'audit_log'")).scalar_one()
            login = conn.execute(text("SELECT rolcanlogin, rolsuper FROM pg_roles "
                                      "WHERE rolname = :r"), {"r": app_role}).one()
        assert owner != app_role  # only the owner could disable the triggers
        assert tuple(login) == (True, False)
    finally:
        data.dispose()
        keys.dispose()


def test_app_role_recomputes_expiries_after_a_schedule_change(
        pg_schemas: Any, tmp_path: Path, app_role: str) -> None:
    """A shortened retention period, met by a process running as the application role
    (no privilege on vault_meta): plan recomputes the stored expiries, records the new
    fingerprint (retention_fingerprints: INSERT only) and audits it once."""
    import shutil

    settings, data_url, keys_url = _owner_settings(pg_schemas, tmp_path)
    with Vault.init(settings=settings) as vault:
        vault.roles.assign("crm", "crm_service", tenant="acme")
        vault.roles.assign("ada", "admin", tenant="acme")
        rid = vault.put(CRM, "customers", {**customer(1), "device_info": {"os": "x"}},
                        purpose="account_management")
        grant_app_role(vault.engine, app_role)
        grant_keystore_role(vault.keystore.engine, app_role)
        with vault.engine.connect() as conn:
            before = conn.execute(text("SELECT expires_at FROM retention WHERE record_id = :r"),
                                  {"r": rid}).scalar_one()
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    schedule = policies / "retention.toml"
    old = 'period = "P13M"\nfrom = "created"'
    assert old in schedule.read_text(encoding="utf-8")
    schedule.write_text(schedule.read_text(encoding="utf-8").replace(
        old, 'period = "P1M"\nfrom = "created"', 1), encoding="utf-8")
    app_settings = VaultSettings.build(
        home=tmp_path / "v", policies=policies,
        database_url=_as_role(data_url, app_role), keystore_url=_as_role(keys_url, app_role))
    with Vault.open(settings=app_settings) as vault:
        vault.retention.plan(tenant="acme", actor=Actor("ada", "acme"))
        vault.retention.plan(tenant="acme", actor=Actor("ada", "acme"))
        with vault.engine.connect() as conn:
            after = conn.execute(text("SELECT expires_at FROM retention WHERE record_id = :r"),
                                 {"r": rid}).scalar_one()
            recomputed = conn.execute(text(
                "SELECT count(*) FROM audit_log WHERE action = 'retention.recompute'")).scalar()
        assert after < before
        assert recomputed == 1
        assert vault.audit_log.verify().ok


def test_cli_upgrade_postgres_roles_grants_what_a_new_version_added(
        pg_schemas: Any, tmp_path: Path, app_role: str) -> None:
    """A role made by an older version lacks the privileges on tables added since;
    `vault upgrade --postgres-roles ROLE` grants them (and echoes no password)."""
    from typer.testing import CliRunner

    from vault.cli import app

    data_url = pg_schemas.url(pg_schemas.names[0])
    keys_url = pg_schemas.url(pg_schemas.names[1])
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_APP_ROLE_PASSWORD": "s3cret-pw",
           "VAULT_DATABASE_URL": data_url, "VAULT_KEYSTORE_URL": keys_url}
    home = str(tmp_path / "v")
    result = CliRunner().invoke(app, ["init", "--home", home, "--postgres-roles", app_role],
                                env=env)
    assert result.exit_code == 0, result.output
    data = make_engine(data_url)
    try:
        with data.begin() as conn:  # as if the role predated these tables
            for table in ("config_snapshots", "retention_fingerprints"):
                conn.execute(text(f'REVOKE ALL ON "{table}" FROM "{app_role}"'))
        assert _privileges(data, app_role, "config_snapshots") == set()
        result = CliRunner().invoke(app, ["upgrade", "--home", home,
                                          "--postgres-roles", app_role], env=env)
        assert result.exit_code == 0, result.output
        assert "s3cret-pw" not in result.output
        for table in ("config_snapshots", "retention_fingerprints"):
            assert _privileges(data, app_role, table) == {"SELECT", "INSERT"}, table
    finally:
        data.dispose()


def test_the_app_role_password_is_never_sent_or_shown(pg_schemas: Any, tmp_path: Path,
                                                      app_role: str) -> None:
    """VAULT_APP_ROLE_PASSWORD goes to the server only as a verifier (libpq hashes it),
    so it is in no statement (the server's log) and no error message: a user who may
    not alter roles used to get a ProgrammingError quoting ALTER ROLE ... PASSWORD
    '<the password>', printed by the CLI as a traceback."""
    import traceback

    from sqlalchemy import event

    canary = "Role-Pw-Canary-4711"
    url = pg_schemas.url(pg_schemas.names[0])
    Vault.init(settings=VaultSettings.build(
        home=tmp_path / "v", policies=POLICIES, database_url=url,
        keystore_url=pg_schemas.url(pg_schemas.names[1]))).close()
    admin = make_engine(url)
    sent: list[str] = []
    event.listen(admin, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: sent.append(statement))
    operator = f"{app_role}_op"
    try:
        grant_app_role(admin, app_role, password=canary)
        assert sent and not any(canary in s for s in sent)
        with admin.connect() as conn:
            stored = conn.execute(text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"),
                                  {"r": app_role}).scalar_one()
            assert stored.startswith("SCRAM-SHA-256$") and canary not in stored
        with admin.begin() as conn:
            conn.execute(text(f'CREATE ROLE "{operator}"'))  # no CREATEROLE
            conn.execute(text(f'GRANT "{operator}" TO CURRENT_USER'))
        as_operator = make_engine(_as_role(url, operator))
        try:
            with pytest.raises(ConfigError) as info:
                grant_app_role(as_operator, app_role, password=canary)
        finally:
            as_operator.dispose()
        shown = "".join(traceback.format_exception(info.value))
        assert "could not be set" in shown and canary not in shown
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP ROLE IF EXISTS "{operator}"'))
        admin.dispose()
