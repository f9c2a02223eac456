"""``vault consent`` on the embedded default."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from typer.testing import CliRunner

from vault import Actor, Vault
from vault.cli import app

from ..conftest import POLICIES

runner = CliRunner()


def run(home: Path, *args: str) -> tuple[int, str]:
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(home), "COLUMNS": "250"}
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_consent_commands_end_to_end(tmp_path: Path) -> None:
    """grant, gpc, show, history, receipt, verify-receipt, withdraw and report."""
    home = tmp_path / "home"
    assert run(home, "init")[0] == 0
    with Vault.open(home, policies=POLICIES) as vault:
        vault.roles.assign("crm", "crm_service", tenant="acme")
        vault.put(Actor("crm", "acme"), "customers", {"full_name": "Ana"},
                  purpose="account_management", subject_id="cust-1", jurisdiction="US-CA")

    code, output = run(home, "consent", "grant", "cust-1", "sale", "--tenant", "acme",
                       "--notice", "data_sale", "--notice-version", "1", "--method", "web_form")
    assert code == 0, output
    assert "granted sale (general) under ccpa" in output
    event_id = output.split("receipt ")[-1].strip()

    code, output = run(home, "consent", "gpc", "cust-1", "--tenant", "acme",
                       "--source", "gateway")
    assert code == 0, output
    assert "conflict: an earlier opt-in to sale was overridden" in output

    code, output = run(home, "consent", "show", "cust-1", "--tenant", "acme")
    assert code == 0 and "regime ccpa" in output
    assert output.count("withdrawn") == 2
    # the CCPA wait before asking to opt in again: 12 months after the GPC opt-out
    today = dt.datetime.now(dt.UTC)
    assert "ask again" in output and f"{today.year + 1}-{today.month:02d}-" in output

    code, output = run(home, "consent", "history", "cust-1", "--tenant", "acme")
    assert code == 0 and "gpc_overrides_opt_in" in output

    receipt_file = tmp_path / "receipt.json"
    code, output = run(home, "consent", "receipt", event_id, "--tenant", "acme",
                       "--out", str(receipt_file))
    assert code == 0, output
    assert json.loads(receipt_file.read_text())["receipt"]["consentReceiptID"] == event_id
    pem = tmp_path / "vault.pub.pem"
    assert run(home, "keys", "export-public-key", "--out", str(pem))[0] == 0
    code, output = run(home, "consent", "verify-receipt", str(receipt_file),
                       "--public-key", str(pem))
    assert code == 0 and "receipt verified" in output
    data = json.loads(receipt_file.read_text())
    data["receipt"]["services"][0]["purposes"][0]["purpose"] = "marketing"
    receipt_file.write_text(json.dumps(data))
    code, output = run(home, "consent", "verify-receipt", str(receipt_file),
                       "--public-key", str(pem))
    assert code == 1 and "invalid_receipt" in output

    code, output = run(home, "consent", "withdraw", "cust-1", "marketing", "--tenant", "acme")
    assert code == 0 and "withdrawn marketing" in output

    code, output = run(home, "consent", "report", "--tenant", "acme", "--format", "csv")
    assert code == 0
    assert "ccpa,sale,general,0,1,0,0,1,1.0" in output
    code, output = run(home, "consent", "report", "--tenant", "acme")
    assert code == 0 and "GPC signals: 2 (overriding an opt-in: 1)" in output
    code, output = run(home, "consent", "report", "--format", "json")
    assert code == 0 and json.loads(output)["gpc_conflicts"] == 1

    code, output = run(home, "consent", "grant", "cust-1", "sale", "--tenant", "acme",
                       "--notice", "marketing", "--notice-version", "1")
    assert code == 1 and "invalid_data" in output and len(output.strip().splitlines()) == 1
    assert run(home, "audit", "verify")[0] == 0
