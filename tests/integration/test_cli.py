"""The ``vault`` command line on the embedded default."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from vault import Vault
from vault.cli import app

from ..conftest import POLICIES

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def run(home: Path, *args: str) -> tuple[int, str]:
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(home), "COLUMNS": "200"}
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_init_creates_private_key_file_and_refuses_twice(home: Path) -> None:
    """vault init makes a 0600 key file; a second init exits 1 with a one-line reason."""
    code, output = run(home, "init")
    assert code == 0, output
    mode = stat.S_IMODE(os.stat(home / "keyfile.json").st_mode)
    assert mode == 0o600
    assert (home / "data.db").exists() and (home / "keys.db").exists()
    code, output = run(home, "init")
    assert code == 1
    assert "already" in output and len(output.strip().splitlines()) == 1


def test_open_refuses_group_readable_key_file(home: Path) -> None:
    """A key file readable by others is refused with a clear error."""
    assert run(home, "init")[0] == 0
    os.chmod(home / "keyfile.json", 0o644)
    code, output = run(home, "keys", "status")
    assert code == 1 and "error" in output


def test_commands_on_uninitialised_vault_fail_cleanly(home: Path) -> None:
    """Without init, commands exit 1 with one line, not a traceback."""
    code, output = run(home, "audit", "verify")
    assert code == 1
    assert "Traceback" not in output


def test_roles_and_policy_check(home: Path) -> None:
    """Assigning a role changes what policy check answers; unknown roles are refused."""
    assert run(home, "init")[0] == 0
    code, _ = run(home, "policy", "check", "sam", "customers.email", "read",
                  "--purpose", "customer_support", "--tenant", "acme")
    assert code == 4  # deny: a decision, not the error code
    code, output = run(home, "roles", "assign", "sam", "support_agent", "--tenant", "acme")
    assert code == 0, output
    code, output = run(home, "policy", "check", "sam", "customers.email", "read",
                       "--purpose", "customer_support", "--tenant", "acme")
    assert code == 0 and "allow" in output
    code, output = run(home, "policy", "check", "sam", "customers.national_id", "read",
                       "--purpose", "customer_support", "--tenant", "acme")
    assert code == 4 and "deny" in output
    code, output = run(home, "roles", "list", "--tenant", "acme")
    assert code == 0 and "support_agent" in output
    code, output = run(home, "roles", "assign", "sam", "overlord", "--tenant", "acme")
    assert code == 1 and "unknown_role" in output
    code, output = run(home, "policy", "check", "sam", "customers.email", "read",
                       "--purpose", "curiosity", "--tenant", "acme")
    assert code == 1 and "unknown_purpose" in output
    assert "registered purposes: account_management, analytics," in output


def test_policy_check_names_a_field_or_collection_that_does_not_exist(home: Path) -> None:
    """A misspelt field or collection is an error (exit 1) saying it does not exist,
    not a silent deny."""
    assert run(home, "init")[0] == 0
    code, output = run(home, "policy", "check", "sam", "customers.emial", "read",
                       "--purpose", "customer_support", "--tenant", "acme")
    assert code == 1 and "unknown_field" in output and "has no field 'emial'" in output
    code, output = run(home, "policy", "check", "sam", "custmers.email", "read",
                       "--purpose", "customer_support", "--tenant", "acme")
    assert code == 1 and "unknown_collection" in output


def test_keys_rotate_and_retire(home: Path) -> None:
    """keys rotate makes version 2 current; retire 1 then succeeds; status shows it."""
    assert run(home, "demo", "--customers", "10")[0] == 0
    code, output = run(home, "keys", "retire", "1", "--yes")
    assert code == 1 and "current" in output.lower()
    code, output = run(home, "keys", "rotate")
    assert code == 0 and "10 data keys rewrapped" in output
    code, output = run(home, "keys", "retire", "1", "--yes")
    assert code == 0, output
    code, output = run(home, "keys", "status")
    assert code == 0 and "current" in output


def test_demo_refuses_a_vault_it_did_not_create(home: Path) -> None:
    """The demo adds fake customers only to a vault it made itself (issue 16)."""
    assert run(home, "init")[0] == 0
    code, output = run(home, "demo", "--customers", "5")
    assert code == 1 and "did not create" in output, output
    assert len(output.strip().splitlines()) <= 2
    with Vault.open(home, policies=POLICIES) as vault, vault.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM records")).scalar_one() == 0
    assert run(home.parent / "demo-home", "demo", "--customers", "5")[0] == 0
    assert run(home.parent / "demo-home", "demo", "--customers", "5")[0] == 0  # its own


def test_demo_shows_each_role_and_verifies(home: Path) -> None:
    """vault demo loads customers, shows every role's view and verifies the audit log."""
    code, output = run(home, "demo", "--customers", "25")
    assert code == 0, output
    for role in ("crm_service", "sales_rep", "support_agent", "marketing", "analyst", "dpo",
                 "compliance_officer", "admin"):
        assert role in output
    assert "****" in output  # support sees the phone masked
    assert "audit log verified" in output


def test_audit_verify_fails_after_raw_sql_tampering(home: Path) -> None:
    """vault audit verify exits 3 and names the entry after a row is altered in SQL."""
    assert run(home, "demo", "--customers", "5")[0] == 0
    code, output = run(home, "audit", "verify")
    assert code == 0 and "verified" in output
    with Vault.open(home, policies=POLICIES) as vault, vault.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_log_no_update"))
        seq = conn.execute(text("SELECT min(seq) FROM audit_log WHERE action = 'write'")
                           ).scalar_one()
        conn.execute(text("UPDATE audit_log SET actor = 'nobody' WHERE seq = :s"), {"s": seq})
    code, output = run(home, "audit", "verify")
    assert code == 3
    assert f"entry {seq}" in output and "modified_entry" in output
