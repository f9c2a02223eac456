"""``--format json`` on every command that prints data, with the stable envelope of
docs/cli.md (``schema_version``, ``kind``); an invalid ``--format`` is a usage error
(exit 2); time options share one grammar (dates, zoned times, relative spans)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vault import Actor, Vault
from vault.cli import app
from vault.cli._time import parse_when, parse_window

from ..conftest import POLICIES

runner = CliRunner()


def _run(home: Path, *args: str) -> tuple[int, str, str]:
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(home), "COLUMNS": "80"}
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vault with one customer (cust-1, US-CA) and a consent, a hold and a DSAR."""
    home = tmp_path_factory.mktemp("formats") / "home"
    assert _run(home, "init")[0] == 0
    with Vault.open(home, policies=POLICIES) as vault:
        vault.roles.assign("crm", "crm_service", tenant="acme")
        vault.put(Actor("crm", "acme"), "customers", {"full_name": "Ana"},
                  purpose="account_management", subject_id="cust-1", jurisdiction="US-CA")
    assert _run(home, "consent", "grant", "cust-1", "sale", "--tenant", "acme", "--notice",
                "data_sale", "--notice-version", "1")[0] == 0
    assert _run(home, "retention", "holds", "place", "--tenant", "acme", "--subject",
                "cust-1", "--reason", "LIT-1")[0] == 0
    assert _run(home, "dsar", "submit", "access", "--tenant", "acme", "--email",
                "ana@example.com", "--channel", "email")[0] == 0
    return home


def _doc(home: Path, *args: str) -> dict[str, Any]:
    code, out, err = _run(home, *args, "--format", "json")
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    assert doc["schema_version"] == 1
    return doc


def test_roles_keys_and_verify_as_json(home: Path) -> None:
    """roles list, keys status and audit verify print their documented documents."""
    roles = _doc(home, "roles", "list")
    assert roles["kind"] == "roles.assignments"
    assert {"user": "crm", "role": "crm_service", "tenant": "acme"} in roles["assignments"]
    keys = _doc(home, "keys", "status")
    assert keys["kind"] == "keys.status" and keys["provider"] == "file"
    assert keys["versions"][0]["current"] and keys["versions"][0]["data_keys"] >= 1
    verify = _doc(home, "audit", "verify")
    assert verify["kind"] == "audit.verify" and verify["ok"] and verify["findings"] == []
    assert verify["entries"] > 0


def test_consent_show_and_history_as_json(home: Path) -> None:
    """consent show (state per purpose) and history (events) as JSON."""
    state = _doc(home, "consent", "show", "cust-1", "--tenant", "acme")
    assert state["kind"] == "consent.state" and state["regime"] == "ccpa"
    assert {(c["purpose"], c["status"]) for c in state["consents"]} >= {("sale", "granted")}
    history = _doc(home, "consent", "history", "cust-1", "--tenant", "acme")
    assert history["kind"] == "consent.history"
    assert [e["kind"] for e in history["events"]] == ["grant"]
    assert history["events"][0]["event_id"]


def test_retention_and_holds_and_dsar_as_json(home: Path) -> None:
    """retention sweep --dry-run, holds list and dsar list as JSON; holds show whole ids."""
    sweep = _doc(home, "retention", "sweep", "--dry-run")
    assert sweep["kind"] == "retention.sweep" and sweep["dry_run"] is True
    assert {"records_deleted", "records_pruned", "held"} <= set(sweep)
    holds = _doc(home, "retention", "holds", "list")
    assert len(holds["holds"]) == 1 and len(holds["holds"][0]["id"]) >= 32
    requests = _doc(home, "dsar", "list", "--tenant", "acme")
    assert requests["kind"] == "dsar.requests" and len(requests["requests"]) == 1
    assert requests["requests"][0]["kind"] == "access"
    none = _doc(home, "dsar", "list", "--tenant", "acme", "--until", "2001-01-01")
    assert none["requests"] == []
    recent = _doc(home, "dsar", "list", "--tenant", "acme", "--since", "1h")
    assert len(recent["requests"]) == 1


def test_status_as_json(home: Path) -> None:
    """audit status as JSON."""
    assert _doc(home, "audit", "status")["kind"] == "audit.status"


@pytest.mark.parametrize("command", [
    ["roles", "list"], ["keys", "status"], ["audit", "verify"], ["audit", "status"],
    ["consent", "show", "cust-1", "--tenant", "acme"],
    ["consent", "history", "cust-1", "--tenant", "acme"],
    ["consent", "report"], ["retention", "sweep", "--dry-run"], ["retention", "plan"],
    ["retention", "report"], ["retention", "holds", "list"],
    ["dsar", "list", "--tenant", "acme"], ["audit", "report"],
])
def test_an_invalid_format_is_a_usage_error(home: Path, command: list[str]) -> None:
    """--format yaml exits 2 naming --format, prints nothing on stdout, no traceback."""
    code, out, err = _run(home, *command, "--format", "yaml")
    assert code == 2, err
    assert out == "" and "'--format'" in err and "Traceback" not in err


@pytest.mark.parametrize(("command", "option"), [
    (["audit", "report", "--since", "soon"], "'--from'"),
    (["retention", "plan", "--until", "2026-13-01"], "'--until'"),
    (["dsar", "list", "--tenant", "acme", "--from", "12:00"], "'--from'"),
    (["dsar", "report", "--tenant", "acme", "--to", "2026-11-01T10:00"], "'--to'"),
])
def test_a_bad_time_is_a_usage_error_naming_the_option(
        home: Path, command: list[str], option: str) -> None:
    """A bad time exits 2, names the option as typed, and shows examples."""
    code, out, err = _run(home, *command)
    assert out == ""
    assert code == 2, err
    flat = " ".join(err.split())
    assert option in flat and ("7d" in flat or "zone" in flat)
    assert "since" not in err.replace("--since", "") and "Traceback" not in err


NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "future", "expected"), [
    ("2026-11-26", False, dt.datetime(2026, 11, 26, tzinfo=dt.UTC)),
    ("2026-11-26T09:30:00+01:00", False, dt.datetime(2026, 11, 26, 8, 30, tzinfo=dt.UTC)),
    ("2026-11-26 09:30Z", False, dt.datetime(2026, 11, 26, 9, 30, tzinfo=dt.UTC)),
    ("7d", False, NOW - dt.timedelta(days=7)),
    ("12h", False, NOW - dt.timedelta(hours=12)),
    ("30m", False, NOW - dt.timedelta(minutes=30)),
    ("2w", False, NOW - dt.timedelta(weeks=2)),
    ("30d", True, NOW + dt.timedelta(days=30)),
    ("-1d", True, NOW - dt.timedelta(days=1)),
    ("+1d", False, NOW + dt.timedelta(days=1)),
    ("now", False, NOW),
    ("today", False, dt.datetime(2026, 11, 26, tzinfo=dt.UTC)),
])
def test_time_grammar(text: str, future: bool, expected: dt.datetime) -> None:
    """Dates, zoned times and relative spans (back from now; forward for a horizon)."""
    assert parse_when(text, "--x", future=future, now=NOW) == expected


def test_a_window_end_date_covers_its_day_and_order_is_checked() -> None:
    """--to 2026-11-26 ends at the day's last microsecond; --from after --to is refused."""
    start, end = parse_window("7d", "2026-11-26", now=NOW)
    assert start == NOW - dt.timedelta(days=7)
    assert end == dt.datetime(2026, 11, 27, tzinfo=dt.UTC) - dt.timedelta(microseconds=1)
    with pytest.raises(Exception, match="is after --to"):
        parse_window("1d", "30d", now=NOW)


def test_holds_list_shows_whole_ids_on_80_columns(home: Path) -> None:
    """The hold id that `holds lift` needs is printed whole on an 80-column terminal."""
    (hold,) = _doc(home, "retention", "holds", "list")["holds"]
    code, out, _err = _run(home, "retention", "holds", "list")
    assert code == 0
    assert any(hold["id"] in line for line in out.splitlines())
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80
    assert "LIT-1" in out and "cust-1" in out


@pytest.mark.parametrize("command", [
    ["consent", "report", "--format", "json"],
    ["consent", "receipt", "no-such-receipt", "--tenant", "acme"],
    ["retention", "report", "--format", "json"],
])
def test_an_out_path_in_a_missing_folder_is_one_line(home: Path, tmp_path: Path,
                                                     command: list[str]) -> None:
    """--out into a folder that does not exist: exit 1, one line, no traceback."""
    if command[1] == "receipt":
        (event,) = _doc(home, "consent", "history", "cust-1", "--tenant", "acme")["events"]
        command = ["consent", "receipt", event["event_id"], "--tenant", "acme"]
    code, _out, err = _run(home, *command, "--out", str(tmp_path / "missing" / "x.json"))
    assert code == 1, err
    assert "cannot write" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
