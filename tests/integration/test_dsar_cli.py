"""``vault dsar`` and ``vault subjects`` on the embedded default: the README's DPO
walkthrough (one access request, one erasure request, submit to certificate)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyotp
from typer.testing import CliRunner

from vault import Actor, Vault
from vault.cli import app

from ..conftest import POLICIES

runner = CliRunner()
ANA = {"full_name": "Ana Example", "email": "ana@example.com", "phone": "+4930123456",
       "birth_date": "1990-01-02", "country": "DE"}


def run(home: Path, *args: str) -> tuple[int, str]:
    """Exit code and output; with ``--format json`` only stdout (progress bars and
    errors go to stderr)."""
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(home), "COLUMNS": "250"}
    result = runner.invoke(app, list(args), env=env)
    if "json" in args and result.exit_code == 0:
        return result.exit_code, result.stdout
    return result.exit_code, result.output


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _json(output: str) -> dict:  # type: ignore[type-arg]
    return json.loads(output)  # type: ignore[no-any-return]


def _totp(home: Path, actor: str, tenant: str) -> pyotp.TOTP:
    """A person key of ``actor`` enrolled for TOTP, as the README's operator does."""
    code, output = run(home, "gateway", "keys", "create", f"{actor}-key", "--actor", actor,
                       "--tenant", tenant, "--kind", "person")
    assert code == 0, output
    code, output = run(home, "gateway", "totp", "enrol", f"{actor}-key")
    assert code == 0, output
    uri = next(line for line in output.splitlines() if line.startswith("otpauth://"))
    return pyotp.parse_uri(uri)  # type: ignore[return-value]


def test_dpo_walkthrough_access_and_erasure(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(home, "init")[0] == 0
    with Vault.open(home, policies=POLICIES) as vault:
        vault.roles.assign("crm", "crm_service", tenant="acme")
        vault.roles.assign("dana", "dpo", tenant="acme")
        vault.put(Actor("crm", "acme"), "customers", ANA, purpose="account_management",
                  subject_id="cust-1", jurisdiction="DE")
    # Exports and erasure need the DPO's second factor (step-up): a TOTP code.
    totp = _totp(home, "dana", "acme")

    code, output = run(home, "subjects", "find", "--tenant", "acme", "--email",
                       "ANA@example.com", "--actor", "dana")
    assert code == 0 and output.strip() == "cust-1", output

    # Access: submit by e-mail, verify with evidence from a file, export, check the bundle.
    code, output = run(home, "dsar", "submit", "access", "--tenant", "acme", "--email",
                       "ana@example.com", "--channel", "email", "--format", "json")
    assert code == 0, output
    request = _json(output)
    assert (request["subject_id"], request["regime"], request["state"]) == (
        "cust-1", "gdpr", "received")
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps({"full_name": "ana example"}))
    code, output = run(home, "dsar", "verify", request["id"], "--tenant", "acme",
                       "--evidence-file", str(evidence), "--actor", "dana")
    assert code == 0 and "identity_verified" in output, output
    code, output = run(home, "dsar", "export", request["id"], "--tenant", "acme",
                       "--actor", "dana", "--out", str(tmp_path / "exports"), "--format", "json")
    assert code == 1 and "second factor" in output, output
    code, output = run(home, "dsar", "export", request["id"], "--tenant", "acme",
                       "--actor", "dana", "--out", str(tmp_path / "exports"), "--format", "json",
                       "--otp", (first := totp.now()))
    assert code == 0, output
    done = _json(output)
    assert done["state"] == "completed"
    pem = tmp_path / "vault.pub.pem"
    assert run(home, "keys", "export-public-key", "--out", str(pem))[0] == 0
    code, output = run(home, "dsar", "verify-export", done["result"]["export"],
                       "--public-key", str(pem))
    assert code == 0 and "7 files match" in output, output
    (Path(done["result"]["export"]) / "records.json").write_text("{}")
    code, output = run(home, "dsar", "verify-export", done["result"]["export"],
                       "--public-key", str(pem))
    assert code == 1 and "changed:records.json" in output
    assert len(output.strip().splitlines()) == 1  # one-line error

    # Erasure: submit by subject, accept as known (GDPR Art. 12(6)), process, certificate.
    code, output = run(home, "dsar", "submit", "erase", "--tenant", "acme", "--subject",
                       "cust-1", "--format", "json")
    erasure = _json(output)
    code, output = run(home, "dsar", "verify", erasure["id"], "--tenant", "acme",
                       "--accept-as-known", "signed_in_customer")
    assert code == 0, output
    # An erasure asks first (no terminal here: refused, exit 2, until --yes).
    code, output = run(home, "dsar", "process", erasure["id"], "--tenant", "acme",
                       "--actor", "dana", "--out", str(tmp_path / "certs"), "--format", "json")
    assert code == 2 and "--yes" in output, output
    # A code is accepted once: the export's code is refused (replay).
    code, output = run(home, "dsar", "process", erasure["id"], "--tenant", "acme",
                       "--actor", "dana", "--out", str(tmp_path / "certs"), "--format", "json",
                       "--yes", "--otp", first)
    assert code == 1 and "not accepted" in output, output
    code, output = run(home, "dsar", "process", erasure["id"], "--tenant", "acme",
                       "--actor", "dana", "--out", str(tmp_path / "certs"), "--format", "json",
                       "--yes", "--otp", totp.at(_now(), counter_offset=1))
    assert code == 0, output
    erased = _json(output)
    assert erased["state"] == "completed"
    certificate = erased["result"]["certificate_file"]
    code, output = run(home, "dsar", "verify-export", certificate, "--public-key", str(pem))
    assert code == 0 and "certificate" in output
    assert "Ana" not in Path(certificate).read_text()

    code, output = run(home, "dsar", "list", "--tenant", "acme")
    assert code == 0 and output.count("completed") == 2
    code, output = run(home, "dsar", "show", erasure["id"], "--tenant", "acme")
    assert code == 0 and "History" in output
    code, output = run(home, "dsar", "report", "--tenant", "acme", "--format", "json")
    assert code == 0 and json.loads(output)["on_time_rate"] == 1.0
    code, output = run(home, "dsar", "report", "--tenant", "acme")
    assert code == 0 and "gdpr" in output


def test_errors_are_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(home, "init")[0] == 0
    code, output = run(home, "dsar", "submit", "everything", "--tenant", "acme")
    assert code == 1 and output.startswith("error:") and "[invalid_data]" in output
    code, output = run(home, "dsar", "submit", "limit_sensitive", "--tenant", "acme",
                       "--jurisdiction", "DE")
    assert code == 1 and "[right_not_granted]" in output
    code, output = run(home, "dsar", "submit", "access", "--tenant", "acme",
                       "--jurisdiction", "DE", "--format", "json")
    request = _json(output)
    code, output = run(home, "dsar", "complete", request["id"], "--tenant", "acme")
    assert code == 1 and "[invalid_transition]" in output
    code, output = run(home, "subjects", "show", "nobody", "--tenant", "acme")
    assert code == 1 and "[not_found]" in output


def test_subject_commands_and_the_other_moves(tmp_path: Path) -> None:
    """subjects show|restrict|lift-restriction|set-jurisdiction; dsar acknowledge,
    extend, reject, report as CSV, purge."""
    home = tmp_path / "home"
    assert run(home, "init")[0] == 0
    with Vault.open(home, policies=POLICIES) as vault:
        vault.roles.assign("crm", "crm_service", tenant="acme")
        vault.put(Actor("crm", "acme"), "customers", ANA, purpose="account_management",
                  subject_id="cust-1", jurisdiction="US-CA")
    code, output = run(home, "subjects", "restrict", "cust-1", "--tenant", "acme",
                       "--reason", "gdpr_18_1_a", "--format", "json")
    assert code == 0 and _json(output)["restriction_reason"] == "gdpr_18_1_a"
    code, output = run(home, "subjects", "lift-restriction", "cust-1", "--tenant", "acme")
    assert code == 0 and "RESTRICTED" not in output
    code, output = run(home, "subjects", "set-jurisdiction", "cust-1", "DE", "--tenant", "acme")
    assert code == 0 and "regime gdpr" in output
    code, output = run(home, "subjects", "show", "cust-1", "--tenant", "acme", "--format",
                       "json")
    assert _json(output)["jurisdiction"] == "DE"
    code, output = run(home, "dsar", "submit", "know", "--tenant", "acme",
                       "--jurisdiction", "US-CA", "--format", "json")
    request = _json(output)
    assert run(home, "dsar", "acknowledge", request["id"], "--tenant", "acme")[0] == 0
    code, output = run(home, "dsar", "extend", request["id"], "--tenant", "acme",
                       "--reason", "complex_request", "--format", "json")
    assert code == 0 and _json(output)["extended"] is True
    code, output = run(home, "dsar", "reject", request["id"], "--tenant", "acme",
                       "--reason-code", "identity_not_verified")
    assert code == 0 and "rejected" in output
    report = tmp_path / "log.csv"
    code, output = run(home, "dsar", "report", "--tenant", "acme", "--format", "log-csv",
                       "--out", str(report))
    assert code == 0 and "identity_not_verified" in report.read_text()
    code, output = run(home, "dsar", "purge")
    assert code == 0 and "purged 0 closed request(s)" in output
