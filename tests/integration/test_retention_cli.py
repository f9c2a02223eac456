"""``vault retention`` on the embedded default: plan, sweep, holds, event, report."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vault import Actor, FixedClock, Vault
from vault.cli import app

from ..conftest import POLICIES

runner = CliRunner()
OLD = dt.datetime(2015, 6, 1, tzinfo=dt.UTC)


def run(home: Path, *args: str) -> tuple[int, str]:
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(home), "COLUMNS": "200"}
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A vault with two expired customers (s-old-1, s-old-2) and one current (s-new)."""
    home = tmp_path / "home"
    assert run(home, "init")[0] == 0
    clock = FixedClock(OLD)
    with Vault.open(home, policies=POLICIES, clock=clock) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        crm = Actor("crm", "acme")
        for sid in ("s-old-1", "s-old-2"):
            v.put(crm, "customers", {"full_name": "Old", "email": f"{sid}@example.com"},
                  purpose="account_management", subject_id=sid, jurisdiction="US")
        clock.set(dt.datetime.now(dt.UTC))
        v.put(crm, "customers", {"full_name": "New", "email": "new@example.com"},
              purpose="account_management", subject_id="s-new", jurisdiction="US")
    return home


def records(home: Path) -> set[str]:
    with Vault.open(home, policies=POLICIES) as v:
        return {s for s in ("s-old-1", "s-old-2", "s-new") if v.subject_records("acme", s)}


def test_plan_formats(home: Path) -> None:
    """plan lists each expiring category as a table, CSV or JSON."""
    code, output = run(home, "retention", "plan")
    assert code == 0 and "2 record(s) with data expiring" in output
    code, output = run(home, "retention", "plan", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(output)))
    assert {(r["subject_id"], r["category"], r["action"]) for r in rows} == {
        (s, c, a) for s in ("s-old-1", "s-old-2")
        for c, a in (("identity", "shred"), ("contact", "delete"))}
    code, output = run(home, "retention", "plan", "--until", "2099-12-31", "--format", "json")
    doc = json.loads(output)
    assert doc["schema_version"] == 1 and doc["records"] == 3
    assert {e["subject_id"] for e in doc["entries"]} == {"s-old-1", "s-old-2", "s-new"}
    code, output = run(home, "retention", "plan", "--format", "xml")
    assert code == 2 and "'--format'" in output and "Traceback" not in output
    code, output = run(home, "retention", "plan", "--until", "tomorrow")
    assert code == 2 and "'--until'" in output and "7d" in output


def test_sweep_holds_and_report(home: Path, tmp_path: Path) -> None:
    """A dry run removes nothing; a held subject survives a sweep until its hold is
    lifted; the report says so in CSV and JSON."""
    code, output = run(home, "retention", "sweep", "--dry-run")
    assert code == 0 and "would remove 2 record(s)" in output
    assert records(home) == {"s-old-1", "s-old-2", "s-new"}
    code, output = run(home, "retention", "holds", "place", "--tenant", "acme",
                       "--subject", "s-old-1", "--reason", "LIT-9")
    assert code == 0 and "placed on subject s-old-1" in output
    hold_id = output.split()[1]
    code, output = run(home, "retention", "holds", "list", "--format", "json")
    assert [h["id"] for h in json.loads(output)["holds"]] == [hold_id]
    code, output = run(home, "retention", "sweep", "--batch", "1", "--yes")
    assert code == 0 and "removed 1 record(s)" in output and "1 held" in output
    assert records(home) == {"s-old-1", "s-new"}
    out_file = tmp_path / "report.json"
    code, output = run(home, "retention", "report", "--format", "json", "--out", str(out_file))
    assert code == 0
    rep = json.loads(out_file.read_text())
    assert rep["backlog"] == {"expired": 0, "held": 1, "waiting_for_event": 0}
    assert rep["active_holds"] == 1 and rep["runs"][0]["deleted"] == 1
    code, output = run(home, "retention", "report", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(output)))
    assert {r["section"] for r in rows} >= {"backlog", "holds", "run"}
    code, output = run(home, "retention", "holds", "lift", hold_id, "--yes")
    assert code == 0
    code, output = run(home, "retention", "holds", "lift", hold_id, "-y")
    assert code == 1 and "already lifted" in output
    code, output = run(home, "retention", "sweep", "--yes")
    assert code == 0 and "removed 1 record(s)" in output
    assert records(home) == {"s-new"}
    code, output = run(home, "retention", "report")
    assert code == 0 and "Last sweeps" in output
    assert run(home, "audit", "verify")[0] == 0


def test_event_moves_expiry(home: Path) -> None:
    """event records a contract end (and --clear forgets it); the plan follows."""
    code, output = run(home, "retention", "event", "s-new", "consent_withdrawn",
                       "--tenant", "acme", "--at", "2020-01-01")
    assert code == 0 and "expiry of 1 record(s) recomputed" in output
    code, output = run(home, "retention", "event", "s-new", "contract_end",
                       "--tenant", "acme", "--at", "2001-01-01")
    assert code == 0
    code, output = run(home, "retention", "plan", "--format", "json")
    assert "s-new" in {e["subject_id"] for e in json.loads(output)["entries"]}
    code, output = run(home, "retention", "event", "s-new", "contract_end",
                       "--tenant", "acme", "--clear")
    assert code == 0
    code, output = run(home, "retention", "plan", "--format", "json")
    assert "s-new" not in {e["subject_id"] for e in json.loads(output)["entries"]}
    code, output = run(home, "retention", "event", "s-new", "birthday", "--tenant", "acme")
    assert code == 1 and "event must be one of" in output
