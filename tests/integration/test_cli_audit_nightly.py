"""Regular audits (issue 16): ``vault audit nightly`` verifies the log, signs a
checkpoint and writes a dated report, with an exit code monitoring can alert on;
``vault audit status`` and every report state the last verification."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from vault import Vault, VaultSettings
from vault.audit.report import ReportView, render, rich_table
from vault.cli import app

from ..conftest import POLICIES
from ..helpers import disable_triggers

runner = CliRunner()


def _env(settings: VaultSettings) -> dict[str, str]:
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(settings.home),
           "COLUMNS": "200"}
    if settings.database_url:
        env["VAULT_DATABASE_URL"] = settings.database_url
        env["VAULT_KEYSTORE_URL"] = str(settings.keystore_url)
    return env


def _run(settings: VaultSettings, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=_env(settings))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def made(settings: VaultSettings) -> VaultSettings:
    with Vault.init(settings=settings) as v:
        v.roles.assign("sam", "support_agent", tenant="acme")
    return settings


def _tamper(settings: VaultSettings) -> None:
    """Change one entry's reason behind Vault's back (the triggers dropped first)."""
    with Vault.open(settings=settings) as v:
        disable_triggers(v.engine)
        with v.engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET reason = 'forged' WHERE seq = "
                              "(SELECT MIN(seq) FROM audit_log WHERE action = 'roles.assign')"))


def test_nightly_on_a_sound_log_signs_writes_a_dated_report_and_exits_0(
        made: VaultSettings, tmp_path: Path) -> None:
    """The first run (no checkpoint yet) and the second (checking the first) both exit 0,
    each signing a checkpoint and writing today's HTML and JSON report."""
    cps, reports = tmp_path / "cps", tmp_path / "reports"
    for run in (1, 2):
        code, out, err = _run(made, "audit", "nightly", "--checkpoints", str(cps),
                              "--out", str(reports))
        assert code == 0, out + err
        assert len(list(cps.glob("checkpoint-*.json"))) == run
        assert f"{run - 1} earlier checkpoint(s) hold" in out
    (html_file,) = reports.glob("audit-*-denials.html")
    (json_file,) = reports.glob("audit-*-denials.json")
    doc = json.loads(json_file.read_text())
    assert json_file.name == f"audit-{doc['generated_at'][:10]}-denials.json"
    assert doc["verification"]["state"] == "verified"
    newest = sorted(p.name for p in cps.glob("checkpoint-*.json"))[-1]
    assert doc["verification"]["checkpoint"] == newest
    assert 'id="verification" class="verified"' in html_file.read_text()
    assert newest in html_file.read_text()


def test_nightly_on_a_damaged_log_exits_3_and_its_report_says_so(
        made: VaultSettings, tmp_path: Path) -> None:
    """Damage: exit 3, no checkpoint signed, the report states the damage, and
    ``audit status`` shows it (exit 3) in text and JSON."""
    cps, reports = tmp_path / "cps", tmp_path / "reports"
    assert _run(made, "audit", "nightly", "--checkpoints", str(cps), "--out", str(reports),
                "--format", "json")[0] == 0
    _tamper(made)
    code, out, err = _run(made, "audit", "nightly", "--checkpoints", str(cps),
                          "--out", str(reports), "--format", "json")
    assert code == 3, out + err
    assert "audit log damaged" in err and "Traceback" not in err
    assert len(list(cps.glob("checkpoint-*.json"))) == 1
    (json_file,) = reports.glob("audit-*.json")
    verification = json.loads(json_file.read_text())["verification"]
    assert verification["state"] == "damaged" and verification["damage"]
    code, out, _err = _run(made, "audit", "status")
    assert code == 3 and "DAMAGED" in out
    code, out, _err = _run(made, "audit", "status", "--format", "json")
    status = json.loads(out)
    assert code == 3
    assert status["schema_version"] == 1 and status["kind"] == "audit.status"
    assert status["state"] == "damaged" and status["action"] == "audit.verify"


def test_nightly_error_exits_1_and_bad_options_exit_2(made: VaultSettings,
                                                      tmp_path: Path) -> None:
    """A folder that cannot be made is an error (1, one line); a bad format or span a
    usage error (2)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _out, err = _run(made, "audit", "nightly", "--checkpoints", str(blocker / "cps"),
                           "--out", str(tmp_path / "r"))
    assert code == 1 and "cannot create the folder" in err and "Traceback" not in err
    code, _out, err = _run(made, "audit", "nightly", "--checkpoints", str(tmp_path / "c"),
                           "--out", str(tmp_path / "r"), "--format", "pdf")
    assert code == 2 and "--format" in err
    code, _out, err = _run(made, "audit", "nightly", "--checkpoints", str(tmp_path / "c"),
                           "--out", str(tmp_path / "r"), "--since", "yesterday-ish")
    assert code == 2 and "--since" in err


def test_status_before_any_verification_and_after_verify(made: VaultSettings) -> None:
    """A fresh vault was never verified; after ``audit verify`` the status names it,
    with no signed checkpoint, and counts the entries that came after."""
    code, out, _err = _run(made, "audit", "status", "--format", "json")
    assert code == 0 and json.loads(out)["state"] == "never_verified"
    assert _run(made, "audit", "verify")[0] == 0
    assert _run(made, "roles", "assign", "ann", "dpo", "--tenant", "acme")[0] == 0
    status = json.loads(_run(made, "audit", "status", "--format", "json")[1])
    assert status["state"] == "verified" and status["action"] == "audit.verify"
    assert status["checkpoint"] is None and status["checkpoints_checked"] == 0
    assert status["entries_since"] == 1
    code, _out, err = _run(made, "audit", "status", "--format", "yaml")
    assert code == 2 and "--format" in err


def test_every_report_output_states_the_verification(made: VaultSettings) -> None:
    """Terminal, CSV (a column on every row, and a row even without rows), JSON and
    HTML all say whether the log verified; a damaged log's report never looks normal."""
    with Vault.open(settings=made) as v:
        v.audit.verify()
        sound = v.audit.report(ReportView.DENIALS)
    assert sound.verification is not None and sound.verification.ok
    _tamper(made)
    with Vault.open(settings=made) as v:
        assert not v.audit.verify().ok
        bad = v.audit.report(ReportView.DENIALS)
        entries = v.audit.report(ReportView.ENTRIES)
    for rep, word in ((sound, "audit log verified at"), (bad, "audit log DAMAGED")):
        rows = list(csv.DictReader(io.StringIO(render(rep, "csv"))))
        assert rows and all(word in r["log_verification"] for r in rows)
        assert word in json.loads(render(rep, "json"))["verification"]["statement"]
        assert word in render(rep, "html")
        assert word in str(rich_table(rep).caption)
    assert "NOT verified" in str(rich_table(bad).title)
    rows = list(csv.DictReader(io.StringIO(render(entries, "csv"))))
    assert len(rows) > 1 and all("DAMAGED" in r["log_verification"] for r in rows)


def test_report_verify_flag_verifies_first(made: VaultSettings) -> None:
    """``audit report --verify`` states a verification made for it."""
    code, out, err = _run(made, "audit", "report", "--verify", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["verification"]["state"] == "verified"
