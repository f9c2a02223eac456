"""``vault audit report``, ``nightly`` and ``status``: audit reports and regular audits.

``register(audit_app)`` adds the commands to the ``audit`` group. A report runs
``v.audit.report``, so running a report is audited like any other: an
``audit.report`` entry on the administrative chain, reason ``view:<view>:<format>``.
Every report states the last verification of the log (``v.audit.status``).

``vault audit nightly`` is the one command of a scheduled job: it verifies the
log (and the signed checkpoints in ``--checkpoints``), signs a new checkpoint
when the log is sound, writes a dated report into ``--out``, and exits 0 when
clean, 3 on damage, 1 on an error (docs/audit.md has a systemd timer and cron).

Examples::

    vault audit nightly --checkpoints /srv/vault-checkpoints --out /srv/vault-reports
    vault audit status --format json
    vault audit report --view denials --since 7d
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
from typing import TYPE_CHECKING, Annotated

import typer

from vault.cli._common import (
    FormatOpt,
    HomeOpt,
    check_format,
    emit_json,
    err,
    fail,
    guard,
    open_vault,
    out,
)
from vault.cli._time import parse_window
from vault.errors import AuditError, ConfigError

if TYPE_CHECKING:
    from vault.audit.report import ReportView, Verification

__all__ = ["audit_nightly", "audit_report", "audit_status", "register"]

_FORMATS = ("table", "csv", "json", "html")
#: Exit code of a damaged log (``vault audit verify``, ``nightly``, ``status``).
DAMAGED = 3

ViewOpt = Annotated[str, typer.Option(
    "--view", help="entries | subject_access | denials | unusual_purpose | bursts | "
                   "privileged")]
SinceOpt = Annotated[str | None, typer.Option(
    "--from", "--since", metavar="TIME",
    help="Start (inclusive): a date (UTC midnight), an ISO 8601 time with a zone, or a "
         "span back from now (7d, 12h, 30m).")]
UntilOpt = Annotated[str | None, typer.Option(
    "--to", "--until", metavar="TIME",
    help="End (inclusive): a date (its whole day, UTC), an ISO 8601 time with a zone, or "
         "a span back from now.")]


def _check_view(view: str) -> ReportView:
    from vault.audit.report import ReportView

    try:
        return ReportView(view)
    except ValueError:
        raise typer.BadParameter("must be one of " + ", ".join(v.value for v in ReportView),
                                 param_hint="'--view'") from None


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {path}: {exc.strerror}") from None


def audit_report(
    view: ViewOpt = "entries",
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json | html")] = "table",
    out_file: Annotated[Path | None, typer.Option(
        "--out", metavar="FILE",
        help="Write to FILE (required for html; csv and json go to stdout without it).")
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
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
        "--limit", min=0, help="Keep at most this many rows (0: all).")] = 10_000,
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
    verify: Annotated[bool, typer.Option(
        "--verify", help="Verify the log first, so that the report states a verification "
                         "of this moment (else: the last one on record).")] = False,
    home: HomeOpt = None,
) -> None:
    """Audit reports: who accessed a subject's data, denials, unusual purposes, bursts,
    privileged actions; as a terminal table, CSV, JSON or one self-contained HTML file.
    Every report states whether (and when, against which checkpoint) the log verified."""
    from rich.console import Console

    from vault.audit.report import render, rich_table

    check_format(fmt, _FORMATS)
    chosen = _check_view(view)
    if fmt == "html" and out_file is None:
        raise typer.BadParameter("--format html needs --out FILE", param_hint="'--out'")
    start, end = parse_window(since, until)
    with open_vault(home) as vault:
        if verify:
            vault.audit.verify()
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
    _write(out_file, text)
    note = " (truncated: raise --limit)" if rep.truncated else ""
    out.print(f"{fmt} report written to {out_file}: {len(rep.rows)} rows, "
              f"{rep.total_entries} entries, {rep.total_denials} denied{note}",
              markup=False, highlight=False, soft_wrap=True)


def audit_nightly(
    checkpoints: Annotated[Path, typer.Option(
        "--checkpoints", metavar="DIR",
        help="Folder of signed checkpoints, outside the database's reach (created if "
             "missing): every one is checked, then a new one is signed.")],
    out_dir: Annotated[Path, typer.Option(
        "--out", metavar="DIR", help="Folder of the dated reports (created if missing).")],
    formats: Annotated[str, typer.Option(
        "--format", metavar="FORMATS",
        help="Report formats, comma-separated: html, json or html,json.")] = "html,json",
    view: ViewOpt = "denials",
    since: Annotated[str, typer.Option(
        "--since", "--from", metavar="TIME",
        help="What the report covers: from this time (default: the last 24 hours).")]
    = "24h",
    home: HomeOpt = None,
) -> None:
    """The regular audit, for a timer or cron: verify the log and its checkpoints, sign a
    checkpoint, write a dated report. Exit 0 clean, 3 damage, 1 an error."""
    from vault.audit.checkpoint import has_checkpoints
    from vault.audit.report import render

    chosen_formats = [f.strip() for f in formats.split(",") if f.strip()]
    for fmt in chosen_formats or [""]:
        check_format(fmt, ("html", "json"))
    chosen = _check_view(view)
    start, _end = parse_window(since, None, since_option="--since")
    for folder in (checkpoints, out_dir):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the folder {folder}: {exc.strerror}") from None
    signed: Path | None = None
    with open_vault(home) as vault:
        # An empty folder (the first run) has nothing to check yet.
        result = vault.audit.verify(checkpoints=checkpoints if has_checkpoints(checkpoints)
                                    else None)
        refused = ""
        if result.ok:
            try:
                signed = vault.audit.checkpoint(checkpoints)
            except AuditError as exc:  # damaged between the two walks
                refused = exc.message
        rep = vault.audit.report(chosen, since=start, output="+".join(chosen_formats))
    day = rep.generated_at.date().isoformat()
    written = []
    for fmt in chosen_formats:
        path = out_dir / f"audit-{day}-{chosen.value}.{fmt}"
        _write(path, render(rep, fmt))
        written.append(path)
    for path in written:
        out.print(f"report written to {path}", markup=False, highlight=False)
    if signed is not None:
        out.print(f"[green]audit log verified[/]: {result.entries} entries in "
                  f"{result.chains} chains, {result.checkpoints} earlier checkpoint(s) hold; "
                  f"signed {signed.name}", highlight=False)
        return
    if refused:
        raise fail(refused, DAMAGED)
    for finding in result.findings[:20]:
        err.print(f"  {finding.kind.value:<28} {finding.detail}", markup=False, highlight=False)
    raise fail(f"audit log damaged: {result.reason} ({result.detail}); "
               f"{len(result.findings)} finding(s); no checkpoint signed", DAMAGED)


def _status_lines(status: Verification) -> list[str]:
    lines = [f"state          {status.state}"]
    if status.at is not None:
        lines.append(f"verified at    {status.at.isoformat()} ({status.action})")
        if status.damage:
            lines.append(f"damage         {status.damage}")
        if status.checkpoints is not None:
            lines.append(f"checked        {status.checkpoints} signed checkpoint(s)")
        lines.append(f"checkpoint     {status.checkpoint or '(none signed)'}"
                     + (f", signed {status.checkpoint_at.isoformat()}"
                        if status.checkpoint_at else ""))
        lines.append(f"entries since  {status.entries_since}")
    lines.append(status.sentence())
    return lines


def audit_status(fmt: FormatOpt = "table", home: HomeOpt = None) -> None:
    """The last verification of the audit log: when, its result, against which signed
    checkpoint, and how many entries came after it (exit 3 if it found damage)."""
    check_format(fmt)
    with open_vault(home) as vault:
        status = vault.audit.status()
    if fmt == "json":
        emit_json("audit.status", status.as_dict())
    else:
        for line in _status_lines(status):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    if status.state == "damaged":
        raise typer.Exit(DAMAGED)


def register(audit_app: typer.Typer) -> None:
    """Add ``report``, ``nightly`` and ``status`` to the ``vault audit`` group (once)."""
    if any(c.name == "report" for c in audit_app.registered_commands):
        return
    audit_app.command("report")(guard(audit_report))
    audit_app.command("nightly")(guard(audit_nightly))
    audit_app.command("status")(guard(audit_status))
