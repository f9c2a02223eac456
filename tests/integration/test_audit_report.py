"""Audit reports: filters, views and outputs (table, CSV, JSON, HTML) on both backends.

One known story of three days is written with a FixedClock, so every count
below is exact. Reports run on it through the library (``Vault.audit.report``)
and through ``vault audit report``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import text as sql_text
from typer.testing import CliRunner

from tests.helpers import stepped_up
from vault import AccessDenied, Actor, InvalidData, Vault, VaultSettings
from vault.audit import AuditEvent, Decision, ReportFilters, ReportThresholds, ReportView
from vault.audit.report import (
    ActorCount,
    AuditReport,
    DayCount,
    FieldCount,
    render,
    report,
    rich_table,
    to_csv,
    to_html,
    to_json,
)
from vault.cli import app
from vault.clock import FixedClock

from ..conftest import POLICIES, ROLE_USERS
from .test_data_path import customer

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
DAY3 = dt.datetime(2026, 11, 4, tzinfo=dt.UTC)
T3 = DAY3 + dt.timedelta(hours=9)
EVE_ID = "eve@partner.example.com"  # a valid identifier with '@' and '.'
CRM, SAM, MAYA, SALLY = (Actor(n, "acme") for n in ("crm", "sam", "maya", "sally"))
EVE = Actor(EVE_ID, "acme")
# Plaintext of the story's customers: none of it may reach any report.
CANARIES = ("Li Wei", "example.cn", "110101199003077777", "+8613812348000", "Beijing")

# Entries of the story per UTC day in tenant acme, as (allowed, denied, errors).
ACME_DAYS = [DayCount("2026-11-02", 17, 0, 0), DayCount("2026-11-03", 3, 3, 0),
             DayCount("2026-11-04", 49, 1, 0)]


@dataclass
class Story:
    vault: Vault
    clock: FixedClock
    ids: list[str]  # customers of subject-0, subject-1, subject-2, then two more of subject-2


@pytest.fixture
def story(settings: VaultSettings) -> Iterator[Story]:
    """Three days in tenant acme (plus vault-wide admin entries in tenant ``*``).

    Day 1 (2026-11-02 09:00): vault.init, config.baseline; 9 roles.assign (the demo users and
    eve@partner.example.com as support agent); crm writes 5 customers
    (subject-0, subject-1, and three records of subject-2) and reads 3.
    Day 2: sam, maya and eve each read one customer (allowed) and are each
    refused one field: sam and eve national_id, maya phone.
    Day 3 from 09:00 (T3): crm reads subject-0's national_id for
    legal_obligation (its only off-purpose access), then 30 reads of
    subject-2 every 4 s; at T3+30 min sally reads 3 records of subject-2 five
    times (one entry each, 15 records); at T3+1 h crm reads subject-1 11 times
    every 3 s and is refused e-mail for marketing; at T3+2 h eve's role is
    revoked, a policy rule added and the KEK rotated (keys.rotate, keys.rewrap).
    """
    clock = FixedClock(T0)
    vault = Vault.init(settings=settings, clock=clock)
    try:
        for user, role in ROLE_USERS.items():
            vault.roles.assign(user, role, tenant="acme")
        vault.roles.assign(EVE_ID, "support_agent", tenant="acme")
        subjects = ["subject-0", "subject-1", "subject-2", "subject-2", "subject-2"]
        # US-CA: marketing is opt-out there, so maya's marketing read needs no grant.
        ids = [vault.put(CRM, "customers", customer(n), purpose="account_management",
                         subject_id=s, jurisdiction="US-CA") for n, s in enumerate(subjects)]
        for rid in ids[:3]:
            vault.get(CRM, "customers", rid, purpose="account_management")

        clock.set(T0 + dt.timedelta(days=1))
        for who, rid, purpose, refused in ((SAM, ids[0], "customer_support", "national_id"),
                                           (MAYA, ids[1], "marketing", "phone"),
                                           (EVE, ids[2], "customer_support", "national_id")):
            vault.get(who, "customers", rid, purpose=purpose)
            with pytest.raises(AccessDenied):
                vault.get(who, "customers", rid, purpose=purpose, fields=[refused])

        clock.set(T3)
        vault.get(stepped_up(CRM, T3), "customers", ids[0], purpose="legal_obligation",
                  fields=["national_id"])  # a sensitive field: with a second factor
        for _ in range(30):
            clock.advance(dt.timedelta(seconds=4))
            vault.get(CRM, "customers", ids[2], purpose="account_management")
        clock.set(T3 + dt.timedelta(minutes=30))
        for _ in range(5):
            clock.advance(dt.timedelta(seconds=10))
            vault.get_many(SALLY, "customers", [ids[2], ids[3], ids[4]],
                           purpose="account_management")
        clock.set(T3 + dt.timedelta(hours=1))
        for _ in range(11):
            clock.advance(dt.timedelta(seconds=3))
            vault.get(CRM, "customers", ids[1], purpose="account_management")
        clock.advance(dt.timedelta(seconds=3))
        with pytest.raises(AccessDenied):
            vault.get(CRM, "customers", ids[1], purpose="marketing", fields=["email"])
        clock.set(T3 + dt.timedelta(hours=2))
        vault.roles.revoke(EVE_ID, "support_agent", tenant="acme")
        vault.policy.add_rule("marketing", "acme", "customers.country", "read", "marketing")
        vault.keys.rotate()
        yield Story(vault, clock, ids)
        assert vault.audit_log.verify().ok, "the audit chain must verify after a report test"
    finally:
        vault.close()


def _rows(rep: AuditReport, *columns: str) -> list[tuple[str | int, ...]]:
    return [tuple(r[c] for c in columns) for r in rep.rows]


# ------------------------------------------------------------------ views


def test_whole_log_figures(story: Story) -> None:
    """Totals, per-day counts and the time span describe exactly the entries written."""
    rep = story.vault.audit.report("entries")
    assert (rep.total_entries, rep.total_allowed, rep.total_denials, rep.total_errors) == (
        77, 73, 4, 0)
    assert rep.per_day == [DayCount("2026-11-02", 19, 0, 0), DayCount("2026-11-03", 3, 3, 0),
                           DayCount("2026-11-04", 51, 1, 0)]
    assert len(rep.rows) == 77 and not rep.truncated
    assert rep.first_entry == T0
    assert rep.last_entry == T3 + dt.timedelta(hours=2)
    assert rep.rows[0]["action"] == "vault.init" and rep.rows[0]["tenant"] == "*"
    assert [r["seq"] for r in rep.rows] == sorted(int(r["seq"]) for r in rep.rows)


def test_subject_access_lists_every_recipient(story: Story) -> None:
    """subject_access names who touched one subject's data, when, why and the outcome."""
    vault = story.vault
    rep = vault.audit.report("subject_access", tenant="acme", subject="subject-0")
    assert _rows(rep, "actor", "action", "purpose", "decision", "time") == [
        ("crm", "write", "account_management", "allow", "2026-11-02T09:00:00+00:00"),
        ("crm", "read", "account_management", "allow", "2026-11-02T09:00:00+00:00"),
        ("sam", "read", "customer_support", "allow", "2026-11-03T09:00:00+00:00"),
        ("sam", "read", "customer_support", "deny", "2026-11-03T09:00:00+00:00"),
        ("crm", "read", "legal_obligation", "allow", "2026-11-04T09:00:00+00:00"),
    ]
    assert rep.rows[2]["fields"] == (
        "device_info, email, full_name, phone~masked, support_notes")
    assert rep.rows[3]["fields"] == "national_id"
    assert rep.rows[3]["reason"] == "field_not_allowed"
    assert (rep.total_entries, rep.total_denials) == (5, 1)
    # The subject is known only by its pseudonym; the id is not kept in the report.
    assert rep.filters == {"tenant": "acme",
                           "subject (pseudonym)": vault.pseudonym("acme", "subject-0")}
    assert "subject-0" not in repr(rep)

    other = vault.audit.report("subject_access", tenant="acme", subject="subject-2")
    assert len(other.rows) == 3 + 1 + 2 + 30 + 5
    assert {r["actor"] for r in other.rows} == {"crm", EVE_ID, "sally"}
    # The same id in another tenant is another subject: nobody touched it.
    assert vault.audit.report("subject_access", tenant="globex",
                              subject="subject-0").rows == []


def test_denials_one_row_per_refused_call_with_its_reason(story: Story) -> None:
    """Every refused call is one row, oldest first, with its reason code, the subject's
    pseudonym (whole) and the request id; the per-actor and per-field counts stay."""
    vault = story.vault
    rep = vault.audit.report("denials", tenant="acme")
    assert _rows(rep, "actor", "fields", "purpose", "reason") == [
        ("sam", "national_id", "customer_support", "field_not_allowed"),
        ("maya", "phone", "marketing", "field_not_allowed"),
        (EVE_ID, "national_id", "customer_support", "field_not_allowed"),
        ("crm", "email", "marketing", "purpose_not_allowed"),
    ]
    assert rep.rows[0]["subjects"] == vault.pseudonym("acme", "subject-0")
    assert rep.rows[0]["records"] == story.ids[0]
    assert all(len(str(r["request_id"])) >= 16 for r in rep.rows)
    assert len({r["request_id"] for r in rep.rows}) == 4
    assert rep.denials_by_actor == [ActorCount("acme", "crm", 1), ActorCount("acme", EVE_ID, 1),
                                    ActorCount("acme", "maya", 1), ActorCount("acme", "sam", 1)]
    assert rep.denials_by_field == [FieldCount("national_id", 2), FieldCount("email", 1),
                                    FieldCount("phone", 1)]
    assert rep.rows[3]["time"] == "2026-11-04T10:00:36+00:00"
    # The denials view looks at every entry, so its totals give the denial rate.
    assert (rep.total_entries, rep.total_denials) == (73, 4)
    assert _rows(vault.audit.report("denials", actor_id="sam"), "fields") == [("national_id",)]
    assert _rows(vault.audit.report("denials", since=DAY3), "actor") == [("crm",)]


def test_unusual_purpose_over_the_window_and_a_baseline(story: Story) -> None:
    """An access for a purpose under the actor's usual share is flagged; small actors are not."""
    vault = story.vault
    rep = vault.audit.report("unusual_purpose", tenant="acme")
    assert _rows(rep, "actor", "purpose", "accesses", "baseline_share", "usual_purposes",
                 "baseline_accesses") == [
        ("crm", "legal_obligation", 1, "2.0%", "account_management", 50)]
    # The baseline ignores the purpose filter: the actor's habits stay the same.
    assert _rows(vault.audit.report("unusual_purpose", purpose="legal_obligation"),
                 "actor", "accesses") == [("crm", 1)]
    # 2% is usual when the threshold is 1%.
    lenient = ReportThresholds(usual_share=0.01)
    assert vault.audit.report("unusual_purpose", thresholds=lenient).rows == []

    # Baseline: the two days before day 3. crm had 8 allowed accesses there, all for
    # account_management; sally had none, so she is not judged.
    baseline = ReportThresholds(usual_min_accesses=5, usual_baseline_days=2)
    rep = vault.audit.report("unusual_purpose", since=DAY3, thresholds=baseline)
    assert _rows(rep, "actor", "purpose", "accesses", "baseline_share",
                 "baseline_accesses") == [("crm", "legal_obligation", 1, "0.0%", 8)]
    # Nobody had 9 accesses in the baseline: nobody is judged.
    strict = ReportThresholds(usual_min_accesses=9, usual_baseline_days=2)
    assert vault.audit.report("unusual_purpose", since=DAY3, thresholds=strict).rows == []
    with pytest.raises(InvalidData, match="start time"):
        vault.audit.report("unusual_purpose", thresholds=baseline)


def test_bursts_count_records_and_merge_overlapping_windows(story: Story) -> None:
    """More than N records read by one actor within M minutes is a burst, counted exactly."""
    vault = story.vault
    assert vault.audit.report("bursts").rows == []  # defaults: more than 100 in 5 min
    rep = vault.audit.report("bursts", thresholds=ReportThresholds(burst_reads=20))
    # The legal_obligation read and the 30 reads after it fall in one window.
    assert _rows(rep, "actor", "start", "end", "reads", "entries", "denied") == [
        ("crm", "2026-11-04T09:00:00+00:00", "2026-11-04T09:02:00+00:00", 31, 31, 0)]
    assert rep.rows[0]["threshold"] == ">20 records in 5 min"

    rep = vault.audit.report("bursts", tenant="acme",
                             thresholds=ReportThresholds(burst_reads=10, burst_minutes=1))
    assert _rows(rep, "actor", "start", "end", "reads", "entries", "denied") == [
        ("crm", "2026-11-04T09:00:00+00:00", "2026-11-04T09:02:00+00:00", 31, 31, 0),
        ("crm", "2026-11-04T10:00:03+00:00", "2026-11-04T10:00:36+00:00", 12, 12, 1),
        # five entries of three records each: records count, not entries
        ("sally", "2026-11-04T09:30:10+00:00", "2026-11-04T09:30:50+00:00", 15, 5, 0),
    ]
    assert vault.audit.report("bursts", thresholds=ReportThresholds(burst_reads=31)).rows == []
    assert (rep.total_entries, rep.total_denials) == (3 + 6 + 1 + 30 + 5 + 12, 4)


def test_privileged_actions(story: Story) -> None:
    """Role, policy and key administration, and refused attempts to read the audit trail."""
    vault = story.vault
    rep = vault.audit.report("privileged")
    assert [r["action"] for r in rep.rows] == (
        ["vault.init", "config.baseline"] + ["roles.assign"] * 9
        + ["roles.revoke", "policy.change", "keys.rotate", "keys.rewrap"])
    assert rep.rows[10]["reason"] == f"support_agent:{EVE_ID}"
    assert rep.rows[11]["reason"] == f"support_agent:{EVE_ID}"
    acme = vault.audit.report("privileged", tenant="acme")
    assert len(acme.rows) == 11 and acme.total_entries == 11
    # An analyst may not read the audit trail; the refusal is privileged activity.
    with pytest.raises(AccessDenied):
        vault.audit.report("entries", actor=Actor("andy", "acme"))
    refused = vault.audit.report("privileged", action="audit.read")
    assert _rows(refused, "actor", "decision") == [("andy", "deny")]


def test_filters_narrow_the_entries(story: Story) -> None:
    """Each filter, alone and combined, keeps exactly the matching entries."""
    vault = story.vault
    # Tenant "*" holds the vault-wide administration (the first report of this test).
    admin = vault.audit.report("entries", tenant="*")
    assert [r["action"] for r in admin.rows] == ["vault.init", "config.baseline", "keys.rotate",
                                                 "keys.rewrap"]
    day2 = vault.audit.report("entries", tenant="acme", since=DAY2,
                              until=DAY3 - dt.timedelta(seconds=1))
    assert _rows(day2, "actor", "decision") == [
        ("sam", "allow"), ("sam", "deny"), ("maya", "allow"), ("maya", "deny"),
        (EVE_ID, "allow"), (EVE_ID, "deny")]
    assert day2.per_day == [ACME_DAYS[1]]
    assert day2.filters["from"] == "2026-11-03T00:00:00+00:00"
    # Bounds are inclusive, and any zone is accepted and kept in UTC.
    paris = dt.timezone(dt.timedelta(hours=1))
    exact = vault.audit.report("entries", since=T3.astimezone(paris), until=T3)
    assert _rows(exact, "actor", "purpose") == [("crm", "legal_obligation")]
    assert exact.since == T3 and exact.filters["from"] == "2026-11-04T09:00:00+00:00"

    assert vault.audit.report("entries", tenant="acme").per_day == ACME_DAYS
    assert len(vault.audit.report("entries", actor_id="crm", action="read",
                                  purpose="account_management").rows) == 3 + 30 + 11
    assert len(vault.audit.report("entries", decision="deny").rows) == 4
    assert len(vault.audit.report("entries", collection="customers").rows) == 62
    assert len(vault.audit.report("entries", actor_id=EVE_ID).rows) == 2
    assert len(vault.audit.report("entries", tenant="acme", decision=Decision.ALLOW,
                                  action="write").rows) == 5
    assert vault.audit.report("entries", tenant="acme", actor_id="nobody").rows == []


def test_row_limit_keeps_counts_exact(story: Story) -> None:
    """A row limit truncates the rows, never the figures."""
    rep = report(story.vault.engine, ReportFilters(tenant="acme"), limit=10)
    assert len(rep.rows) == 10 and rep.truncated
    assert rep.total_entries == 73 and rep.per_day == ACME_DAYS
    unlimited = report(story.vault.engine, ReportFilters(tenant="acme"), limit=None)
    assert len(unlimited.rows) == 73 and not unlimited.truncated
    assert unlimited.rows[:10] == rep.rows


@pytest.mark.parametrize(("bad", "where"), [
    ({"since": dt.datetime(2026, 11, 2)}, "since"),  # naive
    ({"until": "2026-11-02T09:00:00"}, "until"),  # naive text
    ({"since": "yesterday"}, "since"),
    ({"since": T0, "until": T0 - dt.timedelta(seconds=1)}, None),
    ({"subject": "subject-0"}, None),  # a pseudonym is per tenant
    ({"decision": "maybe"}, "decision"),
    ({"actor_id": "bad actor!"}, "actor"),
    ({"tenant": "acme corp"}, "tenant"),
    ({"action": "READ;drop"}, "action"),
    ({"purpose": "x" * 200}, "purpose"),
    ({"colour": "red"}, "colour"),
])
def test_bad_filters_are_clear_errors(story: Story, bad: dict[str, object],
                                      where: str | None) -> None:
    """A bad filter raises InvalidData naming the filter, never echoing its value."""
    with pytest.raises(InvalidData) as caught:
        story.vault.audit.report("entries", **bad)
    assert caught.value.field == where
    for value in bad.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(caught.value)


def test_bad_views_and_thresholds_are_clear_errors(story: Story) -> None:
    """Unknown views, a subject view without subject and odd thresholds are refused."""
    vault = story.vault
    with pytest.raises(InvalidData, match="unknown report view"):
        vault.audit.report("everything")
    with pytest.raises(InvalidData, match="needs a subject"):
        vault.audit.report(ReportView.SUBJECT_ACCESS, tenant="acme")
    with pytest.raises(InvalidData, match="pseudonym"):
        report(vault.engine, ReportFilters(tenant="acme", subject="s"))
    for bad in ({"usual_share": 1.5}, {"usual_share": 0}, {"burst_reads": 0},
                {"burst_minutes": -1}, {"usual_baseline_days": -1}):
        with pytest.raises(InvalidData):
            ReportThresholds(**bad)
    with pytest.raises(InvalidData):
        report(vault.engine, ReportFilters(), limit=-1)


def test_running_a_report_is_audited(story: Story) -> None:
    """Each report appends an audit.report entry naming the view and who asked."""
    vault = story.vault
    assert vault.audit.report("entries", action="audit.report").rows == []
    vault.audit.report("denials")
    vault.audit.report("bursts", actor=Actor("colin", "acme"))  # a compliance officer
    rep = vault.audit.report("entries", action="audit.report")
    assert _rows(rep, "actor", "tenant", "reason", "decision") == [
        ("system", "*", "view:entries", "allow"), ("system", "*", "view:denials", "allow"),
        ("colin", "acme", "view:bursts", "allow")]
    # A refused report is audited as a denied audit.read, not as an audit.report.
    with pytest.raises(AccessDenied):
        vault.audit.report("entries", actor=Actor("maya", "acme"))
    assert len(vault.audit.report("entries", action="audit.report").rows) == 4
    assert _rows(vault.audit.report("entries", action="audit.read"), "actor", "decision") == [
        ("maya", "deny")]
    # Looking up one subject's access history records that subject's pseudonym, not its id.
    vault.audit.report("subject_access", tenant="acme", subject="subject-1",
                       actor=Actor("colin", "acme"))
    with vault.engine.connect() as conn:
        subjects, = conn.execute(sql_text(
            "SELECT subjects FROM audit_log WHERE action = 'audit.report' "
            "ORDER BY seq DESC LIMIT 1")).one()
    assert json.loads(subjects) == [vault.pseudonym("acme", "subject-1")]
    assert "subject-1" not in subjects


# ------------------------------------------------------------------ outputs


def test_csv_holds_the_rows(story: Story) -> None:
    """CSV: a header, one line per row, the same values as the report."""
    rep = story.vault.audit.report("denials", tenant="acme")
    buffer = io.StringIO()
    to_csv(rep, buffer)
    lines = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert list(lines[0]) == [*rep.columns, "log_verification"]
    assert all(r["log_verification"].startswith("audit log NOT verified") for r in lines)
    assert [(r["actor"], r["fields"], r["reason"]) for r in lines] == [
        ("sam", "national_id", "field_not_allowed"), ("maya", "phone", "field_not_allowed"),
        (EVE_ID, "national_id", "field_not_allowed"), ("crm", "email", "purpose_not_allowed")]
    assert render(rep, "csv") == buffer.getvalue()
    entries = story.vault.audit.report("entries", tenant="acme")
    assert len(list(csv.DictReader(io.StringIO(render(entries, "csv"))))) == 73


def test_json_has_a_stable_schema(story: Story) -> None:
    """JSON: schema_version 1 with totals, per day, denials, the window and the rows."""
    rep = story.vault.audit.report("entries", tenant="acme", since=DAY2)
    doc = json.loads(to_json(rep))
    assert doc["schema_version"] == 1
    assert set(doc) == {"schema_version", "view", "title", "generated_at", "filters",
                        "time_range", "thresholds", "totals", "per_day", "denials_by_actor",
                        "denials_by_field", "columns", "rows", "verification"}
    assert doc["verification"]["state"] == "never_verified"
    assert doc["view"] == "entries"
    assert doc["generated_at"] == "2026-11-04T11:00:00+00:00"  # the vault's clock
    assert doc["filters"] == {"from": "2026-11-03T00:00:00+00:00", "tenant": "acme"}
    assert doc["time_range"] == {"from": "2026-11-03T00:00:00+00:00", "to": None,
                                 "first_entry": "2026-11-03T09:00:00+00:00",
                                 "last_entry": "2026-11-04T11:00:00+00:00"}
    assert doc["totals"] == {"entries": 56, "allowed": 52, "denials": 4, "errors": 0,
                             "rows": 56, "truncated": False}
    assert doc["per_day"] == [
        {"day": "2026-11-03", "allowed": 3, "denied": 3, "errors": 0},
        {"day": "2026-11-04", "allowed": 49, "denied": 1, "errors": 0}]
    assert doc["denials_by_field"][0] == {"field": "national_id", "denials": 2}
    assert {"tenant": "acme", "actor": "sam", "denials": 1} in doc["denials_by_actor"]
    assert doc["thresholds"]["burst_reads"] == 100
    assert doc["columns"] == rep.columns and len(doc["rows"]) == 56
    assert doc["rows"][0]["actor"] == "sam" and doc["rows"][0]["subjects"] == 1


def test_html_is_self_contained_with_stable_ids(story: Story) -> None:
    """HTML: one file, inline CSS and SVG, no scripts or external assets, ids on the numbers."""
    rep = story.vault.audit.report("entries", tenant="acme", since=DAY2,
                                   until=DAY3 + dt.timedelta(hours=23))
    page = to_html(rep)
    assert page == render(rep, "html")
    figures = dict(re.findall(r'id="(total-[a-z]+|row-count)">(\d+)<', page))
    assert figures == {"total-entries": "56", "total-allowed": "52", "total-denials": "4",
                       "total-errors": "0", "row-count": "56"}
    assert 'id="time-from">2026-11-03T00:00:00+00:00<' in page
    assert 'id="time-to">2026-11-04T23:00:00+00:00<' in page
    assert 'id="generated-at">2026-11-04T11:00:00+00:00<' in page
    assert "<dt>tenant</dt><dd>acme</dd>" in page
    assert page.count("<svg") == 2
    assert 'id="chart-per-day"' in page and 'id="chart-denials"' in page
    assert page.count('<rect class="denied"') == 2 + 4  # two days with denials, four actors
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert "url(" not in page and "@import" not in page
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"] * 2
    assert page.count("<tr>") == 1 + 56 + 1 + 3  # rows, and the per-field table
    assert EVE_ID in page


def test_reports_never_show_pii_or_the_subject_id(story: Story) -> None:
    """No customer value and no subject id given as a filter reaches any output."""
    vault = story.vault
    for view in ReportView:
        rep = vault.audit.report(view, tenant="acme", subject="subject-0")
        console = Console(file=io.StringIO(), width=250)
        console.print(rich_table(rep))
        outputs = [render(rep, "csv"), to_json(rep), to_html(rep), console.file.getvalue(),
                   repr(rep)]
        for text in outputs:
            assert "subject-0" not in text, view
            for canary in CANARIES:
                assert canary not in text, (view, canary)
        assert vault.pseudonym("acme", "subject-0") in to_html(rep)


def test_outputs_escape_hostile_values(sqlite_settings: VaultSettings) -> None:
    """A hostile string in the log (from an older writer or another tool) is escaped:
    HTML-escaped in the page, not rich markup in the terminal, no CSV formula."""
    with Vault.init(settings=sqlite_settings) as vault:
        vault.audit_log.write([AuditEvent(
            tenant="acme", actor="<img src=x onerror=alert(1)>", action="read",
            decision=Decision.DENY, collection="customers", fields=("<b>f</b>",),
            purpose="=HYPERLINK(1)", reason="<script>alert(1)</script>")])
        vault.audit_log.write([AuditEvent(
            tenant="*", actor="system", action="config.change", decision=Decision.ALLOW,
            reason="[red]not markup[/red] & \"quoted\"")])
        rep = vault.audit.report("entries")
        denials = vault.audit.report("denials")
    page = to_html(rep) + to_html(denials)
    for raw in ("<script>", "<img src=x", "<b>f</b>"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;b&gt;f&lt;/b&gt;" in page
    assert "[red]not markup[/red] &amp; &quot;quoted&quot;" in page
    cells = list(csv.reader(io.StringIO(render(rep, "csv"))))
    assert [c for row in cells for c in row if "HYPERLINK" in c] == ["'=HYPERLINK(1)"]
    console = Console(file=io.StringIO(), width=300, no_color=True)
    console.print(rich_table(rep))
    assert "[red]not markup[/red]" in console.file.getvalue()
    assert json.loads(to_json(denials))["denials_by_field"] == [
        {"field": "<b>f</b>", "denials": 1}]


def test_empty_report_renders(sqlite_settings: VaultSettings) -> None:
    """A window with no entries still renders every format, with zeros."""
    with Vault.init(settings=sqlite_settings) as vault:
        rep = vault.audit.report("entries", since=dt.datetime(2001, 1, 1, tzinfo=dt.UTC),
                                 until=dt.datetime(2001, 1, 2, tzinfo=dt.UTC))
    assert rep.rows == [] and rep.total_entries == 0 and rep.first_entry is None
    page = to_html(rep)
    assert 'id="total-entries">0<' in page and "<svg" not in page
    assert 'id="chart-per-day-empty"' in page
    assert json.loads(to_json(rep))["time_range"]["first_entry"] is None
    # The header, and one row that only states the log's verification.
    header, status = render(rep, "csv").splitlines()
    assert header == ",".join([*rep.columns, "log_verification"])
    assert status == "," * len(rep.columns) + "audit log NOT verified: no verification on " \
        "record (run vault audit verify or vault audit nightly)"
    with pytest.raises(InvalidData):
        render(rep, "pdf")


# ------------------------------------------------------------------ CLI


@pytest.fixture
def cli(story: Story) -> tuple[Story, dict[str, str]]:
    """The story, with `vault audit report` registered and the environment to reach it."""
    settings = story.vault.settings
    env = {"VAULT_HOME": str(settings.home), "VAULT_POLICIES": str(POLICIES),
           "COLUMNS": "250"}
    if settings.database_url:
        env["VAULT_DATABASE_URL"] = settings.database_url
    if settings.keystore_url:
        env["VAULT_KEYSTORE_URL"] = settings.keystore_url
    return story, env


def _run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["audit", "report", *args], env=env)
    return result.exit_code, result.stdout, result.output


def _cli_reports(vault: Vault) -> list[str]:
    rows = report(vault.engine, ReportFilters(action="audit.report")).rows
    return [str(r["reason"]) for r in rows]


def test_cli_table_csv_json(cli: tuple[Story, dict[str, str]]) -> None:
    """The CLI prints a table, or CSV/JSON on stdout, and audits each run."""
    story, env = cli
    code, _out, output = _run(env, "--view", "denials", "--tenant", "acme")
    assert code == 0, output
    assert "Refused calls, with their reasons" in output
    assert "national_id" in output and EVE_ID in output
    assert "73 entries (69 allowed, 4 denied, 0 errors)" in " ".join(output.split())

    code, out, output = _run(env, "--view", "bursts", "--format", "json", "--tenant", "acme",
                             "--burst-reads", "10", "--burst-minutes", "1")
    assert code == 0, output
    doc = json.loads(out)
    assert [(r["actor"], r["reads"]) for r in doc["rows"]] == [
        ("crm", 31), ("crm", 12), ("sally", 15)]
    assert doc["thresholds"]["burst_reads"] == 10

    code, out, output = _run(env, "--view", "subject_access", "--format", "csv",
                             "--tenant", "acme", "--subject", "subject-0")
    assert code == 0, output
    lines = list(csv.DictReader(io.StringIO(out)))
    assert [(r["actor"], r["decision"]) for r in lines] == [
        ("crm", "allow"), ("crm", "allow"), ("sam", "allow"), ("sam", "deny"),
        ("crm", "allow")]
    assert "subject-0" not in output

    code, out, _ = _run(env, "--view", "unusual_purpose", "--format", "json", "--from",
                        "2026-11-04", "--baseline-days", "2", "--usual-min-accesses", "5")
    assert code == 0
    assert [(r["actor"], r["purpose"]) for r in json.loads(out)["rows"]] == [
        ("crm", "legal_obligation")]

    code, out, _ = _run(env, "--format", "json", "--limit", "2", "--decision", "deny")
    assert code == 0
    doc = json.loads(out)
    assert doc["totals"]["entries"] == 4 and len(doc["rows"]) == 2 and doc["totals"]["truncated"]
    assert _cli_reports(story.vault) == [
        "view:denials:table", "view:bursts:json", "view:subject_access:csv",
        "view:unusual_purpose:json", "view:entries:json"]


def test_cli_html_and_files(cli: tuple[Story, dict[str, str]], tmp_path: Path) -> None:
    """--format html writes one file; bare dates cover whole UTC days; tables go to files."""
    story, env = cli
    page = tmp_path / "report.html"
    code, _out, output = _run(env, "--format", "html", "--out", str(page), "--tenant", "acme",
                              "--from", "2026-11-03", "--to", "2026-11-03")
    assert code == 0, output
    assert "html report written to" in output and "6 rows" in output
    text = page.read_text(encoding="utf-8")
    assert 'id="total-entries">6<' in text and 'id="total-denials">3<' in text
    assert 'id="time-from">2026-11-03T00:00:00+00:00<' in text
    assert 'id="time-to">2026-11-03T23:59:59+00:00<' in text
    table = tmp_path / "report.txt"
    code, _out, output = _run(env, "--view", "privileged", "--out", str(table))
    assert code == 0, output
    assert "roles.revoke" in table.read_text(encoding="utf-8")
    target = tmp_path / "no-such-dir" / "r.json"
    code, _out, output = _run(env, "--format", "json", "--out", str(target))
    assert code == 1 and "cannot write the report" in output
    assert _cli_reports(story.vault)[:2] == ["view:entries:html", "view:privileged:table"]


@pytest.mark.parametrize(("bad", "option"), [
    (["--format", "html"], "'--out'"),
    (["--format", "pdf"], "'--format'"),
    (["--from", "yesterday"], "'--from'"),
    (["--since", "2026-11-03T09:00:00"], "'--from'"),
    (["--from", "2026-11-04", "--to", "2026-11-03"], "'--from'"),
    (["--view", "nope"], "'--view'"),
    (["--limit", "-1"], "'--limit'"),
])
def test_cli_usage_errors_exit_2(cli: tuple[Story, dict[str, str]], bad: list[str],
                                 option: str) -> None:
    """A bad format, view, time or limit is a usage error: exit 2 naming the option as
    typed (never an internal parameter), no traceback, nothing audited."""
    story, env = cli
    code, out, output = _run(env, *bad)
    assert code == 2, output
    assert out == "" and "Traceback" not in output
    assert option in output and "since" not in output.replace("--since", "")
    assert _cli_reports(story.vault) == []


@pytest.mark.parametrize("bad", [
    ["--subject", "subject-0"],
    ["--decision", "maybe"],
    ["--actor", "bad actor!"],
    ["--usual-share", "2"],
    ["--view", "unusual_purpose", "--baseline-days", "3"],
])
def test_cli_refuses_bad_options(cli: tuple[Story, dict[str, str]], bad: list[str]) -> None:
    """A bad option exits 1 with one error line, echoes no value, and audits nothing."""
    story, env = cli
    code, out, output = _run(env, *bad)
    assert code == 1, output
    assert "error" in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1
    assert out == "" or "error" not in out
    assert "subject-0" not in output and "bad actor!" not in output
    assert _cli_reports(story.vault) == []
