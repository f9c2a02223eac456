"""``vault retention``: plan, sweep, legal holds, events and the retention report.

``register(app)`` adds the ``retention`` group to the ``vault`` command. Every
command is audited by the library (``retention.plan``, ``retention.sweep*``,
``holds.place``/``holds.lift``, ``retention.report``)::

    vault retention plan --until 2027-12-31 --format csv > plan.csv
    vault retention sweep --dry-run
    vault retention sweep --batch 2000
    vault retention holds place --tenant acme --subject cust-42 --reason LIT-2026-014
    vault retention holds list --tenant acme
    vault retention holds lift 5f0c...
    vault retention event cust-42 contract_end --tenant acme --at 2026-11-30
    vault retention report --format json --out retention.json
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from vault.cli._common import (
    FormatOpt,
    HomeOpt,
    YesOpt,
    check_format,
    confirm,
    emit_json,
    guard,
    open_vault,
    out,
    progress_bar,
)
from vault.cli._time import parse_when
from vault.errors import ConfigError

if TYPE_CHECKING:
    from vault.retention.holds import LegalHold
    from vault.retention.service import RetentionPlan, RetentionReport

__all__ = ["plan_rows", "register", "render_plan", "render_report", "report_rows"]

retention_app = typer.Typer(help="Retention: plan, sweep, legal holds, events, report.",
                            no_args_is_help=True)
holds_app = typer.Typer(help="Legal holds: place, lift, list.", no_args_is_help=True)
retention_app.add_typer(holds_app, name="holds")

_FORMATS = ("table", "csv", "json")

TableCsvJsonOpt = Annotated[str, typer.Option("--format", help="table | csv | json")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", metavar="FILE", help="Write to FILE instead of stdout (csv, json).")]




def _iso(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _day(value: dt.datetime | None) -> str:
    return "—" if value is None else value.astimezone(dt.UTC).date().isoformat()


def _check_format(fmt: str) -> None:
    check_format(fmt, _FORMATS)


def _emit(text: str, out_file: Path | None, what: str) -> None:

    if out_file is None:
        sys.stdout.write(text)
        return
    try:
        out_file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {what} to {out_file}: {exc.strerror}") from None
    out.print(f"{what} written to {out_file}", markup=False, highlight=False)


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------- plan

_PLAN_HEADER = ("expires_at", "tenant", "collection", "record_id", "subject_id", "category",
                "action", "fields", "held", "basis")


def plan_rows(plan: RetentionPlan) -> list[list[str]]:
    return [[_iso(e.expires_at), e.tenant, e.collection, e.record_id, e.subject_id, e.category,
             e.action, " ".join(e.fields), "yes" if e.held else "no", e.basis]
            for e in plan.entries]


def render_plan(plan: RetentionPlan, fmt: str) -> str:
    """The plan as CSV or JSON (with ``schema_version``)."""
    if fmt == "csv":
        return _csv(_PLAN_HEADER, plan_rows(plan))
    return json.dumps({
        "schema_version": 1, "generated_at": _iso(plan.generated_at), "until": _iso(plan.until),
        "records": plan.records, "truncated": plan.truncated,
        "entries": [dict(zip(_PLAN_HEADER, row, strict=True)) | {"fields": list(e.fields),
                                                                 "held": e.held}
                    for row, e in zip(plan_rows(plan), plan.entries, strict=True)],
    }, indent=2) + "\n"


def plan(
    until: Annotated[str | None, typer.Option(
        "--until", metavar="DATE", help="Horizon: a date (its whole day, UTC) or ISO time; "
                                        "default now (what a sweep would do).")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Detail at most N records.")] = 10_000,
    fmt: TableCsvJsonOpt = "table",
    out_file: OutOpt = None,
    home: HomeOpt = None,
) -> None:
    """What would be removed, and when: per record and data category."""

    _check_format(fmt)
    with open_vault(home) as vault:
        result = vault.retention.plan(
            until=parse_when(until, "--until", end_of_day=True, future=True), tenant=tenant,
            limit=limit)
    if fmt != "table":
        _emit(render_plan(result, fmt), out_file, f"{fmt} plan")
        return
    table = Table(title=f"Retention plan until {_iso(result.until)}")
    for col in ("expires", "tenant", "record", "subject", "category", "action", "fields",
                "held"):
        table.add_column(col)
    for e in result.entries[:200]:
        table.add_row(e.expires_at.date().isoformat(), e.tenant, e.record_id[:12],
                      e.subject_id[:16], e.category, e.action, " ".join(e.fields),
                      "[red]held[/]" if e.held else "")
    out.print(table)
    more = len(result.entries) - 200
    out.print(f"{result.records} record(s) with data expiring by then"
              + (f"; {more} more rows (use --format csv)" if more > 0 else "")
              + ("; truncated at --limit" if result.truncated else ""), highlight=False)


# ---------------------------------------------------------------- sweep


def sweep(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be removed; "
                                                            "change nothing.")] = False,
    batch: Annotated[int, typer.Option("--batch", help="Records per transaction and "
                                                       "audit entry.")] = 1000,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    fmt: FormatOpt = "table",
    home: HomeOpt = None,
    yes: YesOpt = False,
) -> None:
    """Remove expired data in audited batches (idempotent; resumes after a crash);
    asks first on a terminal unless ``--dry-run`` or ``--yes``."""
    if not dry_run:
        confirm("expired records will be deleted, pruned or crypto-shredded", yes=yes)

    with open_vault(home) as vault, progress_bar() as bar:
        task = bar.add_task("checking expired records" if dry_run else "sweeping expired records",
                            total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = vault.retention.sweep(dry_run=dry_run, batch_size=batch, tenant=tenant,
                                       progress=step)
    if fmt == "json":
        emit_json("retention.sweep", {
            "run_id": report.run_id, "status": report.status, "dry_run": dry_run,
            "batches": report.batches, "records_processed": report.records_processed,
            "records_deleted": report.records_deleted, "records_pruned": report.records_pruned,
            "records_anonymised": report.records_anonymised,
            "subjects_shredded": report.subjects_shredded, "held": report.held,
            "interrupted_runs": list(report.interrupted_runs)})
        return
    verb = "would remove" if dry_run else "removed"
    out.print(f"run {report.run_id} ({report.status}): {verb} {report.records_processed} "
              f"record(s) in {report.batches} batch(es): {report.records_deleted} deleted, "
              f"{report.records_pruned} pruned, {report.records_anonymised} anonymised; "
              f"{report.subjects_shredded} subject(s) crypto-shredded; {report.held} held "
              "record(s) skipped", highlight=False)
    if report.interrupted_runs:
        out.print(f"finished the work of {len(report.interrupted_runs)} interrupted run(s): "
                  + ", ".join(report.interrupted_runs), highlight=False)


# ---------------------------------------------------------------- holds


def _hold_row(h: LegalHold) -> list[str]:
    return [h.id, h.tenant, h.subject_id or "(whole tenant)", h.reason, h.placed_by,
            _iso(h.placed_at), _iso(h.until), _iso(h.lifted_at)]


def holds_list(
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    subject: Annotated[str | None, typer.Option("--subject", metavar="SUBJECT_ID")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include lifted and ended holds.")]
    = False,
    fmt: TableCsvJsonOpt = "table",
    home: HomeOpt = None,
) -> None:
    """List legal holds (active ones unless --all)."""

    _check_format(fmt)
    with open_vault(home) as vault:
        holds = vault.holds.list(tenant=tenant, subject_id=subject, active_only=not all_)
    header = ("id", "tenant", "subject", "reason", "placed_by", "placed_at", "until",
              "lifted_at")
    rows = [_hold_row(h) for h in holds]
    if fmt == "csv":
        sys.stdout.write(_csv(header, rows))
    elif fmt == "json":
        sys.stdout.write(json.dumps({"schema_version": 1, "holds": [
            dict(zip(header, r, strict=True)) for r in rows]}, indent=2) + "\n")
    else:
        # Fits 80 columns: the id whole (`holds lift` needs it), days not instants
        # (--format json has them); an end or a lift day only when a hold has one.
        table = Table(title="Legal holds", box=box.SIMPLE_HEAD, pad_edge=False)
        columns: list[tuple[str, Callable[[LegalHold], str]]] = [
            ("id", lambda h: h.id), ("tenant", lambda h: h.tenant),
            ("subject", lambda h: h.subject_id or "(tenant)"), ("reason", lambda h: h.reason),
            ("by", lambda h: h.placed_by), ("placed", lambda h: _day(h.placed_at))]
        if any(h.until for h in holds):
            columns.append(("until", lambda h: _day(h.until)))
        if any(h.lifted_at for h in holds):
            columns.append(("lifted", lambda h: _day(h.lifted_at)))
        for name, _cell in columns:
            table.add_column(name, no_wrap=name == "id", overflow="fold",
                             min_width=10 if name in ("placed", "until", "lifted") else len(name))
        for h in holds:
            table.add_row(*(cell(h) for _name, cell in columns))
        out.print(table)


def holds_place(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant held (or the subject's).")],
    reason: Annotated[str, typer.Option(
        "--reason", help="A case reference (no personal data), at most 200 characters.")],
    subject: Annotated[str | None, typer.Option(
        "--subject", metavar="SUBJECT_ID", help="Hold one subject; without it, the whole "
                                               "tenant.")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", metavar="DATE", help="The hold ends by itself then (date or ISO time).")]
    = None,
    home: HomeOpt = None,
) -> None:
    """Place a legal hold: nothing of the subject (or tenant) is deleted while it applies."""

    with open_vault(home) as vault:
        hold = vault.holds.place(tenant, subject, reason=reason,
                                 until=parse_when(until, "--until", end_of_day=True, future=True))
    scope = f"subject {hold.subject_id}" if hold.subject_id else "the whole tenant"
    out.print(f"hold {hold.id} placed on {scope} in {hold.tenant}", highlight=False)


def holds_lift(hold_id: str, home: HomeOpt = None, yes: YesOpt = False) -> None:
    """Lift a legal hold (the data is subject to retention and erasure again); asks
    first on a terminal (``--yes`` for scripts)."""
    confirm(f"hold {hold_id} will be lifted: its data may be erased again", yes=yes)

    with open_vault(home) as vault:
        vault.holds.lift(hold_id)
    out.print(f"hold {hold_id} lifted", highlight=False)


# ---------------------------------------------------------------- events


def event(
    subject: Annotated[str, typer.Argument(metavar="SUBJECT_ID")],
    kind: Annotated[str, typer.Argument(
        metavar="EVENT", help="last_interaction | contract_end | consent_withdrawn")],
    tenant: Annotated[str, typer.Option("--tenant")] = "default",
    at: Annotated[str | None, typer.Option("--at", metavar="TIME",
                                           help="When (date or ISO time); default now.")]
    = None,
    clear: Annotated[bool, typer.Option("--clear", help="Forget the event (contract "
                                                        "renewed, consent given again).")]
    = False,
    home: HomeOpt = None,
) -> None:
    """Record (or --clear) a subject's event; its records' expiry is recomputed."""

    with open_vault(home) as vault:
        if clear:
            count = vault.retention.clear_event(tenant, subject, kind)
        else:
            count = vault.retention.record_event(tenant, subject, kind, parse_when(at, "--at"))
    out.print(f"{kind} {'cleared' if clear else 'recorded'}; expiry of {count} record(s) "
              "recomputed", highlight=False)


# ---------------------------------------------------------------- report

_REPORT_HEADER = ("section", "window_days", "category", "action", "records", "run_id",
                  "started_at", "finished_at", "status", "dry_run", "deleted", "pruned",
                  "anonymised", "shredded", "held")


def report_rows(rep: RetentionReport) -> list[list[str]]:
    """The report as flat rows (one CSV table with a ``section`` column)."""
    from vault.retention.service import REPORT_WINDOWS

    blank = [""] * 10
    rows = [["backlog", "0", "", "expired", str(rep.expired_unheld), *blank],
            ["backlog", "0", "", "held", str(rep.expired_held), *blank],
            ["backlog", "", "", "waiting_for_event", str(rep.waiting), *blank],
            ["holds", "", "", "active", str(rep.active_holds), *blank]]
    for days in REPORT_WINDOWS:
        for (category, action), n in sorted(rep.upcoming.get(days, {}).items()):
            rows.append(["upcoming", str(days), category, action, str(n), *blank])
    for r in rep.runs:
        rows.append(["run", "", "", "", str(r.records_deleted + r.records_pruned
                                           + r.records_anonymised), r.id, _iso(r.started_at),
                     _iso(r.finished_at), r.status, "yes" if r.dry_run else "no",
                     str(r.records_deleted), str(r.records_pruned), str(r.records_anonymised),
                     str(r.subjects_shredded), str(r.held)])
    return rows


def render_report(rep: RetentionReport, fmt: str) -> str:
    """The retention report as CSV or JSON (with ``schema_version``)."""
    from vault.retention.service import REPORT_WINDOWS

    if fmt == "csv":
        return _csv(_REPORT_HEADER, report_rows(rep))
    return json.dumps({
        "schema_version": 1, "generated_at": _iso(rep.generated_at),
        "backlog": {"expired": rep.expired_unheld, "held": rep.expired_held,
                    "waiting_for_event": rep.waiting},
        "active_holds": rep.active_holds,
        "upcoming": {str(days): [{"category": c, "action": a, "records": n}
                                 for (c, a), n in sorted(rep.upcoming.get(days, {}).items())]
                     for days in REPORT_WINDOWS},
        "runs": [{"id": r.id, "started_at": _iso(r.started_at),
                  "finished_at": _iso(r.finished_at), "status": r.status, "dry_run": r.dry_run,
                  "actor": r.actor, "tenant": r.tenant, "batches": r.batches,
                  "deleted": r.records_deleted, "pruned": r.records_pruned,
                  "anonymised": r.records_anonymised,
                  "shredded": r.subjects_shredded, "held": r.held} for r in rep.runs],
    }, indent=2) + "\n"


def report(fmt: TableCsvJsonOpt = "table", out_file: OutOpt = None,
           runs: Annotated[int, typer.Option("--runs", help="How many last runs.")] = 10,
           tenant: Annotated[str | None, typer.Option(
               "--tenant", help="Only this tenant (and only the sweeps limited to it).")] = None,
           home: HomeOpt = None) -> None:
    """Retention summary: backlog, upcoming deletions (7/30/90/365 days), holds, last runs."""
    from vault.retention.service import REPORT_WINDOWS

    _check_format(fmt)
    with open_vault(home) as vault:
        rep = vault.retention.report(runs=runs, tenant=tenant)
    if fmt != "table":
        _emit(render_report(rep, fmt), out_file, f"{fmt} report")
        return
    out.print(f"Retention on {_iso(rep.generated_at)}: {rep.expired_unheld} record(s) expired "
              f"and due, {rep.expired_held} held, {rep.waiting} waiting for an event; "
              f"{rep.active_holds} active legal hold(s)", highlight=False)
    up = Table(title="Upcoming expiries (records, by next category)")
    up.add_column("category")
    up.add_column("action")
    for days in REPORT_WINDOWS:
        up.add_column(f"≤{days} d", justify="right")
    keys = sorted({k for d in rep.upcoming.values() for k in d})
    for category, action in keys:
        up.add_row(category, action, *(str(rep.upcoming.get(d, {}).get((category, action), 0))
                                       for d in REPORT_WINDOWS))
    out.print(up)
    runs_table = Table(title="Last sweeps")
    for col in ("run", "started", "status", "deleted", "pruned", "anonymised", "shredded",
                "held"):
        runs_table.add_column(col)
    for r in rep.runs:
        runs_table.add_row(r.id, _iso(r.started_at), r.status, str(r.records_deleted),
                           str(r.records_pruned), str(r.records_anonymised),
                           str(r.subjects_shredded), str(r.held))
    out.print(runs_table)


def register(app: typer.Typer) -> None:
    """Add the ``retention`` group to the ``vault`` command (after :mod:`vault.cli`'s helpers)."""

    if retention_app.registered_commands:
        return
    commands: tuple[tuple[typer.Typer, str, Callable[..., None]], ...] = (
        (retention_app, "plan", plan), (retention_app, "sweep", sweep),
        (retention_app, "event", event), (retention_app, "report", report),
        (holds_app, "list", holds_list), (holds_app, "place", holds_place),
        (holds_app, "lift", holds_lift))
    for group, name, fn in commands:
        group.command(name)(guard(fn))
    app.add_typer(retention_app, name="retention")
