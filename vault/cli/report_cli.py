"""``vault audit report``: audit reports for compliance officers on the command line.

``register(audit_app)`` adds the ``report`` command to the ``audit`` group. It
runs ``v.audit.report``, so running a report is audited like any other: an
``audit.report`` entry on the administrative chain, reason ``view:<view>:<format>``.

Examples::

    vault audit report --view denials --from 2026-11-01 --to 2026-11-30
    vault audit report --view subject_access --tenant acme --subject cust-42 \\
        --format html --out access-cust-42.html
    vault audit report --view bursts --burst-reads 50 --burst-minutes 1 --format csv
"""

from __future__ import annotations

import io
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from vault.cli._common import HomeOpt, guard, open_vault, out
from vault.cli._time import parse_when
from vault.errors import ConfigError, InvalidData

__all__ = ["audit_report", "register"]

_FORMATS = ("table", "csv", "json", "html")


def audit_report(
    view: Annotated[str, typer.Option(
        "--view", help="entries | subject_access | denials | unusual_purpose | bursts | "
                       "privileged")] = "entries",
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json | html")] = "table",
    out_file: Annotated[Path | None, typer.Option(
        "--out", metavar="FILE",
        help="Write to FILE (required for html; csv and json go to stdout without it).")
    ] = None,
    since: Annotated[str | None, typer.Option(
        "--from", metavar="TIME",
        help="Start (inclusive): ISO 8601 with a zone, or a date (UTC midnight).")] = None,
    until: Annotated[str | None, typer.Option(
        "--to", metavar="TIME",
        help="End (inclusive): ISO 8601 with a zone, or a date (its whole day, UTC).")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this actor id.")] = None,
    subject: Annotated[str | None, typer.Option(
        "--subject", metavar="SUBJECT_ID",
        help="Only entries about this data subject (needs --tenant); the report shows "
             "its pseudonym, never the id.")] = None,
    action: Annotated[str | None, typer.Option(
        "--action", help="Only this action (read, write, roles.assign, ...).")] = None,
    decision: Annotated[str | None, typer.Option(
        "--decision", help="allow | deny | error")] = None,
    purpose: Annotated[str | None, typer.Option("--purpose")] = None,
    collection: Annotated[str | None, typer.Option("--collection")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", help="Keep at most this many rows (0: all).")] = 10_000,
    usual_share: Annotated[float | None, typer.Option(
        "--usual-share", help="unusual_purpose: share below which a purpose is unusual "
                              "(setting VAULT_REPORT_USUAL_SHARE).")] = None,
    usual_min: Annotated[int | None, typer.Option(
        "--usual-min-accesses", help="unusual_purpose: judge only actors with this many "
                                     "accesses (VAULT_REPORT_USUAL_MIN_ACCESSES).")] = None,
    baseline_days: Annotated[int, typer.Option(
        "--baseline-days", help="unusual_purpose: learn usual purposes from this many days "
                                "before --from (0: from the report's own range).")] = 0,
    burst_reads: Annotated[int | None, typer.Option(
        "--burst-reads", help="bursts: more than this many records read ... "
                              "(VAULT_REPORT_BURST_READS)")] = None,
    burst_minutes: Annotated[int | None, typer.Option(
        "--burst-minutes", help="... within this many minutes "
                                "(VAULT_REPORT_BURST_MINUTES).")] = None,
    home: HomeOpt = None,
) -> None:
    """Audit reports: who accessed a subject's data, denials, unusual purposes, bursts,
    privileged actions; as a terminal table, CSV, JSON or one self-contained HTML file."""
    from rich.console import Console

    from vault.audit.report import ReportView, render, rich_table

    if fmt not in _FORMATS:
        raise InvalidData("--format must be table, csv, json or html", field="format")
    if fmt == "html" and out_file is None:
        raise InvalidData("--format html needs --out FILE", field="out")
    if limit < 0:
        raise InvalidData("--limit must not be negative", field="limit")
    try:
        chosen = ReportView(view)
    except ValueError:
        raise InvalidData("--view must be one of "
                          + ", ".join(v.value for v in ReportView), field="view") from None
    start = parse_when(since, "--from", end_of_day=False)
    end = parse_when(until, "--to", end_of_day=True)
    with open_vault(home) as vault:
        cfg = vault.audit.thresholds()
        thresholds = replace(
            cfg, usual_baseline_days=baseline_days,
            usual_share=cfg.usual_share if usual_share is None else usual_share,
            usual_min_accesses=cfg.usual_min_accesses if usual_min is None else usual_min,
            burst_reads=cfg.burst_reads if burst_reads is None else burst_reads,
            burst_minutes=cfg.burst_minutes if burst_minutes is None else burst_minutes)
        rep = vault.audit.report(
            chosen, thresholds=thresholds, limit=limit or None, output=fmt, since=start,
            until=end, tenant=tenant, actor_id=actor, subject=subject, action=action,
            decision=decision, purpose=purpose, collection=collection)
    if fmt == "table" and out_file is None:
        out.print(rich_table(rep))
        return
    if fmt == "table":
        sink = io.StringIO()
        Console(file=sink, width=200, no_color=True).print(rich_table(rep))
        text = sink.getvalue()
    else:
        text = render(rep, fmt)
    if out_file is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        out_file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out_file}: {exc.strerror}") from None
    note = " (truncated: raise --limit)" if rep.truncated else ""
    out.print(f"{fmt} report written to {out_file}: {len(rep.rows)} rows, "
              f"{rep.total_entries} entries, {rep.total_denials} denied{note}",
              markup=False, highlight=False, soft_wrap=True)


def register(audit_app: typer.Typer) -> None:
    """Add ``report`` to the ``vault audit`` group (once)."""
    if any(c.name == "report" for c in audit_app.registered_commands):
        return
    audit_app.command("report")(guard(audit_report))
