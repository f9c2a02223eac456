"""Audit reports: filters, views, outputs (table, CSV, JSON, HTML), on both backends."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vault import AccessDenied, Actor, InvalidData, Vault, VaultSettings
from vault.audit.report import ReportThresholds, render, rich_table
from vault.cli import app
from vault.clock import FixedClock

from ..conftest import POLICIES, ROLE_USERS
from .test_data_path import customer

START = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
CRM = Actor("crm", "acme")
SAM = Actor("sam", "acme")
MAYA = Actor("maya", "acme")


@pytest.fixture
def story(settings: VaultSettings) -> Iterator[tuple[Vault, FixedClock, dict[str, str]]]:
    """Three days of activity with known numbers.

    Day 1: crm writes 3 customers (3 allowed writes) and reads them (3 reads).
    Day 2: sam reads customer 0 for support (allowed, phone masked) and is
           refused national_id (1 denial); maya reads customer 1 for marketing.
    Day 3: crm reads customer 0 for legal_obligation once (off its usual
           purpose), then 30 reads of customer 2 in two minutes (a burst).
    """
    clock = FixedClock(START)
    vault = Vault.init(settings=settings, clock=clock)
    for user, role in ROLE_USERS.items():
        vault.roles.assign(user, role, tenant="acme")
    ids = [vault.put(CRM, "customers", customer(n), purpose="account_management",
                     subject_id=f"subject-{n}") for n in range(3)]
    for rid in ids:
        vault.get(CRM, "customers", rid, purpose="account_management")
    clock.advance(dt.timedelta(days=1))
    vault.get(SAM, "customers", ids[0], purpose="customer_support")
    with pytest.raises(AccessDenied):
        vault.get(SAM, "customers", ids[0], purpose="customer_support", fields=["national_id"])
    vault.get(MAYA, "customers", ids[1], purpose="marketing")
    clock.advance(dt.timedelta(days=1))
    vault.get(CRM, "customers", ids[0], purpose="legal_obligation", fields=["national_id"])
    for _ in range(30):
        clock.advance(dt.timedelta(seconds=4))
        vault.get(CRM, "customers", ids[2], purpose="account_management")
    try:
        yield vault, clock, {"ids": ",".join(ids)}
    finally:
        vault.close()


def test_subject_access_names_every_recipient(story: tuple[Vault, FixedClock, dict[str, str]]
                                              ) -> None:
    vault, _clock, _ = story
    rep = vault.audit.report("subject_access", tenant="acme", subject="subject-0")
    recipients = [(r["actor"], r["action"], r["purpose"], r["decision"]) for r in rep.rows]
    assert recipients == [
        ("crm", "write", "account_management", "allow"),
        ("crm", "read", "account_management", "allow"),
        ("sam", "read", "customer_support", "allow"),
        ("sam", "read", "customer_support", "deny"),
        ("crm", "read", "legal_obligation", "allow"),
    ]
    assert "subject-0" not in json.dumps(rep.filters)
    assert rep.filters["subject (pseudonym)"] == vault.pseudonym("acme", "subject-0")
    assert "national_id" in rep.rows[3]["fields"]


def test_denials_by_actor_and_field(story: tuple[Vault, FixedClock, dict[str, str]]) -> None:
    vault, _clock, _ = story
    rep = vault.audit.report("denials", tenant="acme")
    assert [(r["actor"], r["field"], r["denials"]) for r in rep.rows] == [
        ("sam", "national_id", 1)]
    assert rep.total_denials == 1
    assert rep.denials_by_actor == [("sam", 1)]
    assert rep.denials_by_field == [("national_id", 1)]


def test_unusual_purpose_and_bursts(story: tuple[Vault, FixedClock, dict[str, str]]) -> None:
    vault, _clock, _ = story
    rep = vault.audit.report("unusual_purpose", tenant="acme")
    assert [(r["actor"], r["purpose"], r["accesses"]) for r in rep.rows] == [
        ("crm", "legal_obligation", 1)]
    assert rep.rows[0]["usual_purposes"] == "account_management"
    rep = vault.audit.report("bursts", tenant="acme",
                             thresholds=ReportThresholds(burst_reads=20, burst_minutes=5))
    # the legal_obligation read and the 30 reads fall in one five-minute window
    assert [(r["actor"], r["reads"]) for r in rep.rows] == [("crm", 31)]
    rep = vault.audit.report("bursts", tenant="acme",
                             thresholds=ReportThresholds(burst_reads=40, burst_minutes=5))
    assert rep.rows == []


def test_filters_and_time_range(story: tuple[Vault, FixedClock, dict[str, str]]) -> None:
    vault, _clock, _ = story
    day2 = START + dt.timedelta(days=1)
    rep = vault.audit.report("entries", tenant="acme", since=day2,
                             until=day2 + dt.timedelta(hours=23))
    assert [(r["actor"], r["decision"]) for r in rep.rows] == [
        ("sam", "allow"), ("sam", "deny"), ("maya", "allow")]
    assert rep.per_day == [("2026-11-03", 2, 1)]
    rep = vault.audit.report("entries", actor_id="crm", action="read",
                             purpose="account_management")
    assert len(rep.rows) == 3 + 30
    assert vault.audit.report("entries", decision="deny").total_entries == 1
    privileged = vault.audit.report("privileged")
    assert {r["action"] for r in privileged.rows} >= {"vault.init", "roles.assign"}
    assert not any(r["action"] == "read" for r in privileged.rows)


@pytest.mark.parametrize("bad", [
    {"since": dt.datetime(2026, 1, 2)},  # naive
    {"since": START, "until": START - dt.timedelta(days=1)},
    {"subject": "subject-0"},  # no tenant
    {"decision": "maybe"},
    {"actor_id": "bad actor!"},
])
def test_bad_filters_are_clear_errors(story: tuple[Vault, FixedClock, dict[str, str]],
                                      bad: dict[str, object]) -> None:
    vault, _clock, _ = story
    with pytest.raises(InvalidData):
        vault.audit.report("entries", **bad)
    with pytest.raises(InvalidData):
        vault.audit.report("everything")


def test_running_a_report_is_audited(story: tuple[Vault, FixedClock, dict[str, str]]) -> None:
    vault, _clock, _ = story
    assert vault.audit.report("entries", action="audit.report").rows == []
    vault.audit.report("denials")
    reports = vault.audit.report("entries", action="audit.report").rows
    assert [r["reason"] for r in reports] == ["view:entries", "view:denials"]
    assert vault.audit_log.verify().ok


def test_outputs(story: tuple[Vault, FixedClock, dict[str, str]]) -> None:
    vault, _clock, _ = story
    rep = vault.audit.report("entries", tenant="acme")
    rows = list(csv.DictReader(io.StringIO(render(rep, "csv"))))
    assert len(rows) == len(rep.rows) == rep.total_entries
    doc = json.loads(render(rep, "json"))
    assert doc["schema_version"] == 1
    assert doc["totals"] == {"entries": rep.total_entries, "denials": 1,
                             "rows": len(rep.rows), "truncated": False}
    assert [d["day"] for d in doc["per_day"]] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    page = render(rep, "html")
    assert f'id="total-entries">{rep.total_entries}<' in page
    assert 'id="total-denials">1<' in page
    assert page.count("<svg") == 2
    assert "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert rich_table(rep).row_count == len(rep.rows)
    with pytest.raises(InvalidData):
        render(rep, "pdf")


def test_html_escapes_everything(sqlite_settings: VaultSettings) -> None:
    with Vault.init(settings=sqlite_settings) as vault:
        vault._audit_admin("config.change", reason="<script>alert(1)</script>")
        page = render(vault.audit.report("privileged"), "html")
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_cli_report(sqlite_settings: VaultSettings, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(sqlite_settings.home),
           "COLUMNS": "200"}
    assert runner.invoke(app, ["init"], env=env).exit_code == 0
    assert runner.invoke(app, ["demo", "--customers", "5"], env=env).exit_code == 0
    result = runner.invoke(app, ["audit", "report", "--view", "denials"], env=env)
    assert result.exit_code == 0, result.output
    assert "Denied attempts" in result.output
    page = tmp_path / "report.html"
    result = runner.invoke(app, ["audit", "report", "--format", "html", "--out", str(page),
                                 "--from", "2020-01-01T00:00:00Z"], env=env)
    assert result.exit_code == 0, result.output
    assert 'id="total-entries"' in page.read_text()
    result = runner.invoke(app, ["audit", "report", "--format", "json", "--decision", "deny"],
                           env=env)
    assert json.loads(result.output)["totals"]["denials"] > 0
    for bad in (["--format", "html"], ["--from", "yesterday"], ["--view", "nope"],
                ["--subject", "s1"]):
        result = runner.invoke(app, ["audit", "report", *bad], env=env)
        assert result.exit_code == 1, bad
        assert "error" in result.output
