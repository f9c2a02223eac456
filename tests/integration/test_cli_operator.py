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
    (assign,) = _contexts(home, "roles.assign")
    for context in (init, assign):
        assert context["operator"] == "alice"
        assert context["os_user"] == getpass.getuser()
        assert context["host"] == socket.gethostname()[:128]


def test_the_environment_and_the_os_login_name_the_operator(tmp_path: Path) -> None:
    home = tmp_path / "v"
    assert _run(home, "init", VAULT_OPERATOR="carol")[0] == 0
    assert _run(home, "roles", "assign", "bob", "dpo", "--tenant", "acme")[0] == 0
    assert _contexts(home, "vault.init")[0]["operator"] == "carol"
    assert _contexts(home, "roles.assign")[0]["operator"] == getpass.getuser()


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
