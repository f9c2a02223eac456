"""Every CLI command runs as a named operator (issue 16): ``--operator NAME`` or
``VAULT_OPERATOR``, defaulting to the OS login; each audit entry the command causes
carries the operator, the OS user and the host in its (hashed) context."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.conftest import POLICIES
from vault import Vault, VaultSettings
from vault.cli import app
from vault.store.models import AuditEntryRow

runner = CliRunner()


def _run(home: Path, *args: str, **env: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={
        "VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(home), "COLUMNS": "200", **env})
    return result.exit_code, result.output


def _contexts(home: Path, action: str) -> list[dict[str, object]]:
    with Vault.open(settings=VaultSettings.build(home=home, policies=POLICIES)) as v, \
            v.engine.connect() as conn:
        rows = conn.execute(select(AuditEntryRow.context).where(
            AuditEntryRow.action == action).order_by(AuditEntryRow.seq)).scalars().all()
    return [json.loads(r) for r in rows]


def test_the_operator_is_in_every_entry_a_command_causes(tmp_path: Path) -> None:
    home = tmp_path / "v"
    assert _run(home, "--operator", "alice", "init")[0] == 0
    code, out = _run(home, "--operator", "alice", "roles", "assign", "bob", "dpo",
                     "--tenant", "acme")
    assert code == 0, out
    (init,) = _contexts(home, "vault.init")
    first_admin, assign = _contexts(home, "roles.assign")  # init names alice admin
    for context in (init, first_admin, assign):
        assert context["operator"] == "alice"
        assert context["os_user"] == getpass.getuser()
        assert context["host"] == socket.gethostname()[:128]


def test_the_environment_and_the_os_login_name_the_operator(tmp_path: Path) -> None:
    home = tmp_path / "v"
    assert _run(home, "init", VAULT_OPERATOR="carol")[0] == 0
    assert _run(home, "roles", "assign", "bob", "dpo", "--tenant", "acme")[0] == 0
    assert _contexts(home, "vault.init")[0]["operator"] == "carol"
    # The first entry is init's (carol made the first administrator), then bob's.
    assert [c["operator"] for c in _contexts(home, "roles.assign")] == [
        "carol", getpass.getuser()]


@pytest.mark.parametrize("bad", ["", "a" * 129, "al\x00ice", "alice bob", "Ã©"])
def test_a_malformed_operator_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    code, out = _run(tmp_path / "v", "--operator", bad, "init")
    assert code == 2, out
    assert not (tmp_path / "v" / "keyfile.json").exists()


def test_version_and_short_help(tmp_path: Path) -> None:
    """``vault --version`` prints the version; ``-h`` is ``--help`` at every level."""
    from vault import __version__

    code, out = _run(tmp_path, "--version")
    assert code == 0 and out.strip() == f"vault {__version__}"
    for args in (["-h"], ["keys", "-h"], ["dsar", "submit", "-h"]):
        code, out = _run(tmp_path, *args)
        assert code == 0 and "Usage:" in out, (args, out)


def test_progress_bars_only_on_a_terminal(tmp_path: Path) -> None:
    """A demo run from cron (stderr not a terminal) prints no progress bar."""
    result = CliRunner().invoke(app, ["demo", "--customers", "5"], env={
        "VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(tmp_path / "v"), "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "encrypting and storing customers" not in result.output
    assert "━" not in result.output


def test_init_makes_the_operator_the_first_administrator(tmp_path: Path) -> None:
    """vault init records its operator (--operator, default the OS login) as the
    administrator of --admin-tenant, audited as roles.assign under the operator."""
    home = tmp_path / "v"
    code, output = _run(home, "--operator", "alice", "init", "--admin-tenant", "acme")
    assert code == 0 and "admin      alice in tenant acme" in output, output
    with Vault.open(settings=VaultSettings.build(home=home, policies=POLICIES)) as v:
        assert [(a.user, a.role, a.tenant) for a in v.roles.list()] == [
            ("alice", "admin", "acme")]
    (assign,) = _contexts(home, "roles.assign")
    assert assign["operator"] == "alice"
    other = tmp_path / "w"
    assert _run(other, "init")[0] == 0
    with Vault.open(settings=VaultSettings.build(home=other, policies=POLICIES)) as v:
        assert [(a.user, a.tenant) for a in v.roles.list()] == [(getpass.getuser(), "default")]
    code, output = _run(tmp_path / "x", "--operator", "al+ice", "init")
    assert code == 2 and "--operator" in output
    assert not (tmp_path / "x" / "keyfile.json").exists()


def test_vault_init_takes_a_first_admin(tmp_path: Path) -> None:
    """Vault.init(first_admin=Actor): that actor administers the new vault."""
    from vault import Actor
    from vault.errors import InvalidData

    with pytest.raises(InvalidData):
        Vault.init(settings=VaultSettings.build(home=tmp_path / "a", policies=POLICIES),
                   first_admin="ada")  # type: ignore[arg-type]
    with Vault.init(settings=VaultSettings.build(home=tmp_path / "b", policies=POLICIES),
                    first_admin=Actor("ada", "acme")) as v:
        assert "admin" in v.policy_engine.roles_for("ada", "acme")
        assert v.policy.check(Actor("ada", "acme"), "keys", "keys.rotate", purpose="security")
