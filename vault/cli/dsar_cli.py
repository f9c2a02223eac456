"""``vault dsar`` and ``vault subjects``: data-subject requests for DPOs.

``register(app)`` adds both groups. Every command goes through ``v.dsar`` or
``v.subjects`` (authorised and audited by the library). Without ``--actor`` a
command runs as the local operator; a request that reads, changes or erases
the subject's data needs the DPO's id (``--actor dana``), so the data path
decides and audits as for any other access. Exports and erasure need the DPO's
second factor (step-up): ``--otp CODE``, a TOTP code of the DPO's person key;
an erasure asks for confirmation on a terminal (``--yes`` for scripts).

Examples::

    vault dsar submit access --tenant acme --email ana@example.com --channel email
    vault dsar list --tenant acme --overdue
    vault dsar show 3f0c... --tenant acme
    vault dsar verify 3f0c... --tenant acme --evidence-file evidence.json
    vault dsar extend 3f0c... --tenant acme --reason complex_request
    vault dsar process 3f0c... --tenant acme --actor dana --otp 123456 --out ./exports
    vault dsar reject 3f0c... --tenant acme --reason-code manifestly_unfounded
    vault dsar verify-export ./exports/dsar-3f0c... --public-key vault.pub.pem
    vault dsar report --tenant acme --format html --out dsar.html
    vault subjects find --tenant acme --email ana@example.com

Evidence given with ``--evidence field=value`` lands in the shell's history:
prefer ``--evidence-file`` (a JSON object), and delete the file afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from vault.cli._common import (
    FormatOpt,
    OtpOpt,
    YesOpt,
    confirm,
    emit_json,
    fail,
    guard,
    open_vault,
    out,
    progress_bar,
    stepped_up,
)
from vault.cli._time import parse_when, parse_window
from vault.errors import InvalidData
from vault.types import Actor

if TYPE_CHECKING:
    from vault.dsar import DSARRequest

__all__ = ["register", "request_json"]

Home = Annotated[Path | None, typer.Option("--home", help="Vault folder. Env: VAULT_HOME.",
                                           show_default=False)]
Tenant = Annotated[str, typer.Option("--tenant", help="Tenant of the subject.")]
ActorOpt = Annotated[str | None, typer.Option(
    "--actor", help="Your user id (e.g. the DPO's); default: the local operator.")]
Format = FormatOpt


def _actor(actor: str | None, tenant: str) -> Actor | None:
    return None if actor is None else Actor(actor, tenant)


def request_json(r: DSARRequest) -> dict[str, Any]:
    """A request as JSON-ready data (ids, codes and dates only)."""
    return {
        "id": r.id, "tenant": r.tenant, "kind": r.kind.value, "right": r.right,
        "state": r.state.value, "regime": r.regime, "subject_id": r.subject_id,
        "channel": r.channel, "agent": r.agent, "received_at": r.received_at.isoformat(),
        "received_on": r.received_on.isoformat(),
        "acknowledge_by": r.acknowledge_by.isoformat() if r.acknowledge_by else None,
        "acknowledged_at": r.acknowledged_at.isoformat() if r.acknowledged_at else None,
        "due_on": r.due_on.isoformat(), "first_due_on": r.first_due_on.isoformat(),
        "extended": r.extended,
        "notified_at": r.notified_at.isoformat() if r.notified_at else None,
        "verification": {"tier": r.verification.tier, "points": r.verification.points,
                         "declaration": r.verification.declaration,
                         "result": r.verification.result.value,
                         "matched": r.verification.matched,
                         "failed_attempts": r.verification.failed_attempts},
        "reject_reason": r.reject_reason,
        "closed_at": r.closed_at.isoformat() if r.closed_at else None,
        "result": dict(r.result),
        "history": [{"seq": h.seq, "at": h.at.isoformat(), "actor": h.actor, "event": h.event,
                     "from": h.from_state.value if h.from_state else None,
                     "to": h.to_state.value if h.to_state else None, "reason": h.reason}
                    for h in r.history],
    }


def _show(r: DSARRequest, fmt: str) -> None:
    if fmt == "json":
        emit_json("dsar.request", request_json(r))
        return
    out.print(f"request [bold]{r.id}[/]: {r.kind.value} ({r.right}, {r.regime}) "
              f"[bold]{r.state.value}[/]")
    out.print(f"  subject {r.subject_id or '— (not matched)'}; received "
              f"{r.received_on.isoformat()} via {r.channel}; due {r.due_on.isoformat()}"
              f"{' (extended)' if r.extended else ''}; acknowledge by "
              f"{r.acknowledge_by.isoformat() if r.acknowledge_by else '—'}")
    v = r.verification
    out.print(f"  verification: {v.result.value} ({v.matched}/{v.points} points"
              f"{', declaration' if v.declaration else ''}; {v.failed_attempts} failed)")
    if r.reject_reason:
        out.print(f"  rejected: {r.reject_reason}")
    for key in ("export", "certificate_file", "explanation_file", "recipients"):
        if key in r.result:
            out.print(f"  {key}: {r.result[key]}")
    table = Table(title="History")
    for column in ("time", "actor", "event", "state", "reason"):
        table.add_column(column, overflow="fold")
    for h in r.history:
        table.add_row(h.at.isoformat(timespec="seconds"), h.actor, h.event,
                      h.to_state.value if h.to_state else "", h.reason or "")
    out.print(table)


def _identifiers(email: str | None, phone: str | None) -> dict[str, str]:
    return {k: v for k, v in (("email", email), ("phone", phone)) if v is not None}


def _evidence(pairs: list[str] | None, file: Path | None) -> dict[str, str]:
    evidence: dict[str, str] = {}
    if file is not None:
        try:
            loaded = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise InvalidData("--evidence-file must be a readable JSON object",
                              field="evidence") from None
        if not isinstance(loaded, dict):
            raise InvalidData("--evidence-file must be a JSON object", field="evidence")
        evidence.update({str(k): str(v) for k, v in loaded.items()})
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep:
            raise InvalidData("--evidence takes FIELD=VALUE", field="evidence")
        evidence[name.strip()] = value
    return evidence


def register(app: typer.Typer) -> None:
    """Add the ``dsar`` and ``subjects`` command groups to ``app``."""
    dsar_app = typer.Typer(help="Data-subject requests: submit, verify, extend, process, "
                                "report.", no_args_is_help=True)
    subjects_app = typer.Typer(help="Data subjects: find, show, restrict, jurisdiction.",
                               no_args_is_help=True)
    app.add_typer(dsar_app, name="dsar")
    app.add_typer(subjects_app, name="subjects")

    @dsar_app.command("submit")
    @guard
    def submit(
        kind: Annotated[str, typer.Argument(help="A kind (access, erasure...) or a right "
                                                 "of the profile (know, delete, copy...).")],
        tenant: Tenant,
        subject: Annotated[str | None, typer.Option("--subject")] = None,
        email: Annotated[str | None, typer.Option("--email")] = None,
        phone: Annotated[str | None, typer.Option("--phone")] = None,
        jurisdiction: Annotated[str | None, typer.Option(
            "--jurisdiction", help="The requester's residency while no subject is matched.")]
        = None,
        channel: Annotated[str, typer.Option("--channel")] = "web",
        received: Annotated[str | None, typer.Option("--received", metavar="TIME")] = None,
        received_reason: Annotated[str | None, typer.Option("--received-reason")] = None,
        agent: Annotated[str | None, typer.Option("--agent")] = None,
        agent_authorisation: Annotated[str | None, typer.Option("--agent-authorisation")]
        = None,
        purposes: Annotated[list[str] | None, typer.Option("--purpose")] = None,
        actor: ActorOpt = None, fmt: Format = "table", home: Home = None,
    ) -> None:
        """Record a request and compute its due dates."""
        with open_vault(home) as vault:
            r = vault.dsar.submit(
                _actor(actor, tenant), kind, tenant=tenant, subject_id=subject,
                identifiers=_identifiers(email, phone), jurisdiction=jurisdiction,
                channel=channel, received_at=parse_when(received, "--received"),
                received_reason=received_reason, agent=agent,
                agent_authorisation=agent_authorisation,
                details={"purposes": purposes} if purposes else None)
        _show(r, fmt)

    @dsar_app.command("list")
    @guard
    def list_(
        tenant: Tenant,
        state: Annotated[str | None, typer.Option("--state")] = None,
        kind: Annotated[str | None, typer.Option("--kind")] = None,
        overdue: Annotated[bool, typer.Option("--overdue")] = False,
        due_within: Annotated[int | None, typer.Option("--due-within", metavar="DAYS")]
        = None,
        ack_due: Annotated[bool, typer.Option("--acknowledgement-due")] = False,
        since: Annotated[str | None, typer.Option(
            "--from", "--since", metavar="TIME",
            help="Only requests received from then: a date, an ISO time with a zone, or a "
                 "span back from now (7d, 12h).")] = None,
        until: Annotated[str | None, typer.Option(
            "--to", "--until", metavar="TIME",
            help="Only requests received until then (a date: its whole day, UTC).")] = None,
        actor: ActorOpt = None, fmt: Format = "table", home: Home = None,
    ) -> None:
        """Requests, earliest due first."""
        start, end = parse_window(since, until)
        with open_vault(home) as vault:
            requests = vault.dsar.list(_actor(actor, tenant), tenant=tenant, state=state,
                                       kind=kind, overdue=overdue, due_within=due_within,
                                       acknowledgement_due=ack_due)
        requests = [r for r in requests if (start is None or r.received_at >= start)
                    and (end is None or r.received_at <= end)]
        if fmt == "json":
            emit_json("dsar.requests", {"requests": [request_json(r) for r in requests]})
            return
        table = Table(title=f"Data-subject requests ({len(requests)})")
        for column in ("id", "kind", "regime", "state", "received", "due", "ack by",
                       "subject"):
            table.add_column(column, overflow="fold")
        for r in requests:
            table.add_row(r.id, r.kind.value, r.regime, r.state.value,
                          r.received_on.isoformat(),
                          r.due_on.isoformat() + (" (ext)" if r.extended else ""),
                          r.acknowledge_by.isoformat() if r.acknowledge_by else "—",
                          r.subject_id or "—")
        out.print(table)

    @dsar_app.command("show")
    @guard
    def show(request_id: str, tenant: Tenant, actor: ActorOpt = None, fmt: Format = "table",
             home: Home = None) -> None:
        """One request with its history."""
        with open_vault(home) as vault:
            _show(vault.dsar.get(_actor(actor, tenant), request_id, tenant=tenant), fmt)

    @dsar_app.command("acknowledge")
    @guard
    def acknowledge(request_id: str, tenant: Tenant,
                    at: Annotated[str | None, typer.Option("--at", metavar="TIME")] = None,
                    actor: ActorOpt = None, fmt: Format = "table", home: Home = None) -> None:
        """Record that receipt was confirmed to the requester."""
        with open_vault(home) as vault:
            _show(vault.dsar.acknowledge(_actor(actor, tenant), request_id, tenant=tenant,
                                         at=parse_when(at, "--at")), fmt)

    @dsar_app.command("verify")
    @guard
    def verify(
        request_id: str, tenant: Tenant,
        evidence: Annotated[list[str] | None, typer.Option(
            "--evidence", metavar="FIELD=VALUE", help="A data point (repeatable).")] = None,
        evidence_file: Annotated[Path | None, typer.Option(
            "--evidence-file", help="A JSON object of data points.")] = None,
        accept_as_known: Annotated[str | None, typer.Option(
            "--accept-as-known", metavar="REASON", help="GDPR: no reasonable doubt.")] = None,
        declaration: Annotated[str | None, typer.Option(
            "--declaration", metavar="REF", help="Reference to a signed declaration.")]
        = None,
        actor: ActorOpt = None, fmt: Format = "table", home: Home = None,
    ) -> None:
        """Verify the requester's identity against the subject's records."""
        with open_vault(home) as vault:
            r = vault.dsar.verify(_actor(actor, tenant), request_id, tenant=tenant,
                                  evidence=_evidence(evidence, evidence_file),
                                  accept_as_known=accept_as_known, declaration=declaration)
        _show(r, fmt)

    @dsar_app.command("extend")
    @guard
    def extend(request_id: str, tenant: Tenant,
               reason: Annotated[str, typer.Option("--reason")],
               notified: Annotated[str | None, typer.Option("--notified", metavar="TIME")]
               = None,
               actor: ActorOpt = None, fmt: Format = "table", home: Home = None) -> None:
        """Extend the response period once, while the first period runs."""
        with open_vault(home) as vault:
            _show(vault.dsar.extend(_actor(actor, tenant), request_id, tenant=tenant,
                                    reason=reason, notified_at=parse_when(notified,
                                                                          "--notified")), fmt)

    @dsar_app.command("process")
    @guard
    def process(
        request_id: str, tenant: Tenant,
        out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for exports, "
                                                     "certificates, statements.")] = None,
        exempt: Annotated[list[str] | None, typer.Option(
            "--exempt", metavar="SCOPE=REASON",
            help="Keep a collection, collection.field or purpose, with a reason code.")]
        = None,
        changes_file: Annotated[Path | None, typer.Option(
            "--changes-file", help="Rectification: JSON {record_id: {field: value}}.")]
        = None,
        actor: ActorOpt = None, fmt: Format = "table", home: Home = None,
        yes: YesOpt = False, otp: OtpOpt = None,
    ) -> None:
        """Fulfil a verified request (an erasure asks first on a terminal; ``--yes``
        for scripts). Exports and erasure need ``--otp`` with ``--actor`` (step-up)."""
        exemptions = {}
        for pair in exempt or []:
            scope, sep, code = pair.partition("=")
            if not sep:
                raise fail("--exempt takes SCOPE=REASON", code=2)
            exemptions[scope] = code
        changes = None
        if changes_file is not None:
            try:
                changes = json.loads(changes_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise fail("--changes-file must be a readable JSON object", code=2) from None
        with open_vault(home) as vault:
            if not yes and vault.dsar.get(_actor(actor, tenant), request_id,
                                          tenant=tenant).kind.value == "erasure":
                confirm(f"request {request_id} erases the subject's data (records "
                        "deleted, data key destroyed)", yes=yes)
            # Before the progress bar is drawn, so that a refused code says so plainly.
            who = stepped_up(vault, _actor(actor, tenant), otp)
            with progress_bar() as bar:
                task = bar.add_task("processing", total=None)
                r = vault.dsar.process(
                    who, request_id, tenant=tenant, out=out_dir,
                    exemptions=exemptions or None, changes=changes,
                    progress=lambda n, total: bar.update(task, completed=n, total=total))
        _show(r, fmt)

    @dsar_app.command("complete")
    @guard
    def complete(request_id: str, tenant: Tenant,
                 note: Annotated[str | None, typer.Option("--note")] = None,
                 actor: ActorOpt = None, fmt: Format = "table", home: Home = None) -> None:
        """Close a request in progress (after a person's review)."""
        with open_vault(home) as vault:
            _show(vault.dsar.complete(_actor(actor, tenant), request_id, tenant=tenant,
                                      note=note), fmt)

    @dsar_app.command("reject")
    @guard
    def reject(request_id: str, tenant: Tenant,
               reason_code: Annotated[str, typer.Option("--reason-code")],
               note: Annotated[str | None, typer.Option("--note")] = None,
               actor: ActorOpt = None, fmt: Format = "table", home: Home = None) -> None:
        """Refuse a request with a reason code."""
        with open_vault(home) as vault:
            _show(vault.dsar.reject(_actor(actor, tenant), request_id, tenant=tenant,
                                    reason_code=reason_code, note=note), fmt)

    @dsar_app.command("export")
    @guard
    def export(request_id: str, tenant: Tenant,
               out_dir: Annotated[Path, typer.Option("--out")],
               actor: ActorOpt = None, fmt: Format = "table", home: Home = None,
               otp: OtpOpt = None) -> None:
        """Fulfil an access or portability request: write its signed bundle (an
        export: ``--otp`` with ``--actor``, step-up)."""
        with open_vault(home) as vault:
            current = vault.dsar.get(_actor(actor, tenant), request_id, tenant=tenant)
            if current.kind.value not in ("access", "portability"):
                raise fail(f"request {request_id} is a {current.kind.value} request; use "
                           "`vault dsar process`")
            who = stepped_up(vault, _actor(actor, tenant), otp)
            with progress_bar() as bar:
                task = bar.add_task("exporting records", total=None)
                done = vault.dsar.process(
                    who, request_id, tenant=tenant, out=out_dir,
                    progress=lambda n, total: bar.update(task, completed=n, total=total))
            _show(done, fmt)

    @dsar_app.command("verify-export")
    @guard
    def verify_export(
        folder: Path,
        public_key: Annotated[Path | None, typer.Option(
            "--public-key", help="PEM from `vault keys export-public-key` (default: this "
                                 "vault's).")] = None,
        home: Home = None,
    ) -> None:
        """Check an export bundle (or an erasure certificate file): signature and files."""
        from vault.audit.checkpoint import load_public_key
        from vault.dsar import verify_bundle, verify_document

        if public_key is not None:
            key = load_public_key(public_key)
        else:
            with open_vault(home) as vault:
                key = load_public_key(vault.audit.export_public_key())
        if folder.is_file():
            verify_document(json.loads(folder.read_text(encoding="utf-8")), key)
            out.print(f"[green]ok[/]: the certificate {folder.name} verifies")
            return
        manifest = verify_bundle(folder, key)
        out.print(f"[green]ok[/]: {len(manifest['files'])} files match the signed manifest "
                  f"of request {manifest['request_id']}")

    @dsar_app.command("report")
    @guard
    def report(
        tenant: Tenant,
        since: Annotated[str | None, typer.Option(
            "--from", "--since", metavar="TIME",
            help="A date, an ISO time with a zone, or a span back from now (30d).")] = None,
        until: Annotated[str | None, typer.Option(
            "--to", "--until", metavar="TIME", help="A date (its whole day) or time.")]
        = None,
        fmt: Annotated[str, typer.Option("--format", help="table | csv | log-csv | json | "
                                                         "html")] = "table",
        out_file: Annotated[Path | None, typer.Option("--out", metavar="FILE")] = None,
        actor: ActorOpt = None, home: Home = None,
    ) -> None:
        """On-time rate, median days to close, open and overdue by regime and kind."""
        start, end = parse_window(since, until)
        with open_vault(home) as vault:
            result = vault.dsar.report(_actor(actor, tenant), tenant=tenant,
                                       since=start, until=end)
        rendered = {"csv": result.to_csv, "log-csv": result.log_csv, "json": result.to_json,
                    "html": result.to_html}.get(fmt)
        if rendered is not None:
            text = rendered()
            if out_file is not None:
                out_file.write_text(text, encoding="utf-8")
                out.print(f"report written to {out_file}")
            else:
                out.print(text, markup=False, highlight=False, soft_wrap=True)
            return
        if fmt != "table":
            raise fail("--format must be table, csv, log-csv, json or html", code=2)
        table = Table(title=f"Data-subject requests: on time {result.on_time_rate}")
        for column in ("regime", "kind", "received", "open", "overdue", "closed", "on time",
                       "late", "rejected", "ack late", "median days"):
            table.add_column(column)
        for g in result.groups:
            table.add_row(g.regime, g.kind, str(g.received), str(g.open), str(g.overdue),
                          str(g.closed), str(g.on_time), str(g.late), str(g.rejected),
                          str(g.acknowledged_late), str(g.median_days_to_close or "—"))
        out.print(table)

    @dsar_app.command("purge")
    @guard
    def purge(actor: Annotated[str | None, typer.Option("--actor")] = None,
              tenant: Annotated[str, typer.Option("--tenant")] = "default",
              home: Home = None) -> None:
        """Apply the request log's retention and delete expired export bundles."""
        with open_vault(home) as vault:
            result = vault.dsar.purge(_actor(actor, tenant))
        out.print(f"purged {result.requests} closed request(s) and "
                  f"{result.exports} export bundle(s)")

    # ------------------------------------------------------------------ subjects

    @subjects_app.command("find")
    @guard
    def subjects_find(tenant: Tenant,
                      email: Annotated[str | None, typer.Option("--email")] = None,
                      phone: Annotated[str | None, typer.Option("--phone")] = None,
                      actor: ActorOpt = None, fmt: Format = "table",
                      home: Home = None) -> None:
        """Subjects holding this e-mail and/or phone (blind index; audited; no data shown)."""
        with open_vault(home) as vault:
            found = vault.dsar.find_subjects(_actor(actor, tenant), tenant=tenant,
                                             identifiers=_identifiers(email, phone))
        if fmt == "json":
            emit_json("subjects.found", {"subject_ids": list(found)})
            return
        out.print("\n".join(found) if found else "no subject found")

    def _subject(info: Any, fmt: str) -> None:
        data = {"subject_id": info.subject_id, "tenant": info.tenant,
                "jurisdiction": info.jurisdiction, "regime": info.regime,
                "restricted_at": info.restricted_at.isoformat() if info.restricted_at else None,
                "restriction_reason": info.restriction_reason}
        if fmt == "json":
            emit_json("subject", data)
            return
        out.print(f"subject {info.subject_id}: jurisdiction {info.jurisdiction or '—'}, "
                  f"regime {info.regime}"
                  + (f", RESTRICTED ({info.restriction_reason})" if info.restricted else ""))

    @subjects_app.command("show")
    @guard
    def subjects_show(subject: str, tenant: Tenant, actor: ActorOpt = None,
                      fmt: Format = "table", home: Home = None) -> None:
        """A subject's jurisdiction, regime and restriction."""
        with open_vault(home) as vault:
            _subject(vault.subjects.get(subject, tenant=tenant, actor=_actor(actor, tenant)),
                     fmt)

    @subjects_app.command("restrict")
    @guard
    def subjects_restrict(subject: str, tenant: Tenant,
                          reason: Annotated[str, typer.Option("--reason")] = "subject_request",
                          actor: ActorOpt = None, fmt: Format = "table",
                          home: Home = None) -> None:
        """Restrict processing of a subject."""
        with open_vault(home) as vault:
            _subject(vault.subjects.restrict(subject, tenant=tenant, reason=reason,
                                             actor=_actor(actor, tenant)), fmt)

    @subjects_app.command("lift-restriction")
    @guard
    def subjects_lift(subject: str, tenant: Tenant, actor: ActorOpt = None,
                      fmt: Format = "table", home: Home = None) -> None:
        """Lift a subject's restriction."""
        with open_vault(home) as vault:
            _subject(vault.subjects.lift_restriction(subject, tenant=tenant,
                                                     actor=_actor(actor, tenant)), fmt)

    @subjects_app.command("set-jurisdiction")
    @guard
    def subjects_set_jurisdiction(subject: str, jurisdiction: str, tenant: Tenant,
                                  actor: ActorOpt = None, fmt: Format = "table",
                                  home: Home = None) -> None:
        """Change a subject's jurisdiction (its regime)."""
        with open_vault(home) as vault:
            _subject(vault.subjects.set_jurisdiction(subject, jurisdiction, tenant=tenant,
                                                     actor=_actor(actor, tenant)), fmt)
