"""``vault consent``: record and inspect consents, GPC, receipts and the summary report.

``register(app)`` adds the ``consent`` group to the ``vault`` command. Every
command is audited by the library (consent events on the subject's chain).

Examples::

    vault consent grant cust-42 marketing --tenant acme --notice marketing --notice-version 2 \\
        --method web_form --source web-shop --evidence form-991
    vault consent withdraw cust-42 marketing --tenant acme
    vault consent gpc cust-42 --tenant acme --source gateway
    vault consent show cust-42 --tenant acme
    vault consent history cust-42 --tenant acme
    vault consent receipt 3f0c... --tenant acme --out receipt.json
    vault consent verify-receipt receipt.json --public-key vault.pub.pem
    vault consent report --tenant acme --format csv --out consent.csv
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from vault.cli._common import FormatOpt, check_format, emit_json, guard, open_vault, out
from vault.cli._time import parse_when
from vault.errors import ConfigError, InvalidData

__all__ = ["register"]

_FORMATS = ("table", "csv", "json")

Home = Annotated[Path | None, typer.Option("--home", help="Vault folder. Env: VAULT_HOME.",
                                           show_default=False)]
Tenant = Annotated[str, typer.Option("--tenant", help="Tenant of the subject.")]
Scope = Annotated[str, typer.Option(
    "--scope", help="general | sensitive | provide_to_third_party | cross_border")]
Method = Annotated[str, typer.Option("--method", help="web_form | api | import | gpc | agent")]
Source = Annotated[str, typer.Option("--source", help="System the decision came from.")]
Evidence = Annotated[str | None, typer.Option(
    "--evidence", help="Reference to evidence kept elsewhere (an id, not personal data).")]


def _write(path: Path, text: str, what: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the {what} to {path}: {exc.strerror}") from None


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


_SHORT = {"granted": "grant", "withdrawn": "withdr", "refused": "refuse", "expired": "expire",
          "opt_out_rate": "out%"}


def register(app: typer.Typer) -> None:
    """Add the ``consent`` command group to ``app``."""
    consent_app = typer.Typer(help="Consent ledger: grant, withdraw, GPC, state, receipts, "
                                   "report.", no_args_is_help=True)
    app.add_typer(consent_app, name="consent")

    @consent_app.command("grant")
    @guard
    def grant(
        subject: str, purpose: str, tenant: Tenant,
        notice: Annotated[str, typer.Option("--notice", help="Notice id (notices.toml).")],
        notice_version: Annotated[int, typer.Option("--notice-version")],
        notice_hash: Annotated[str | None, typer.Option(
            "--notice-hash", help="SHA-256 of the text shown; must match the registry.")]
        = None,
        scope: Scope = "general", method: Method = "api", source: Source = "cli",
        evidence: Evidence = None,
        expires: Annotated[str | None, typer.Option("--expires", metavar="TIME")] = None,
        home: Home = None,
    ) -> None:
        """Record that SUBJECT consents to PURPOSE against a notice version."""
        with open_vault(home) as vault:
            event = vault.consent.grant(
                subject, purpose, tenant=tenant, notice_id=notice,
                notice_version=notice_version, notice_hash=notice_hash, scope=scope,
                method=method, source=source, evidence=evidence,
                expires_at=parse_when(expires, "--expires", future=True))
        out.print(f"[green]granted[/] {purpose} ({event.scope.value}) under {event.regime}; "
                  f"receipt {event.event_id}")

    @consent_app.command("withdraw")
    @guard
    def withdraw(subject: str, purpose: str, tenant: Tenant, scope: Scope = "general",
                 method: Method = "api", source: Source = "cli", evidence: Evidence = None,
                 home: Home = None) -> None:
        """Record that SUBJECT withdraws (opts out of) PURPOSE."""
        with open_vault(home) as vault:
            event = vault.consent.withdraw(subject, purpose, tenant=tenant, scope=scope,
                                           method=method, source=source, evidence=evidence)
        out.print(f"[yellow]withdrawn[/] {purpose} ({event.scope.value}) under {event.regime}; "
                  f"receipt {event.event_id}")

    @consent_app.command("gpc")
    @guard
    def gpc(subject: str, tenant: Tenant, source: Source = "cli", home: Home = None) -> None:
        """Record a Global Privacy Control signal: opt-out of sale and sharing."""
        with open_vault(home) as vault:
            result = vault.consent.apply_gpc(subject, source=source, tenant=tenant)
        if not result.honoured:
            out.print("GPC is not honoured under this subject's profile; nothing recorded")
            return
        out.print(f"[yellow]opted out[/] of {', '.join(e.purpose for e in result.events)}")
        for purpose in result.conflicts:
            out.print(f"  conflict: an earlier opt-in to {purpose} was overridden "
                      "(CCPA regs §7025(c)(3)); recorded")

    @consent_app.command("show")
    @guard
    def show(subject: str, tenant: Tenant, fmt: FormatOpt = "table", home: Home = None) -> None:
        """The current consent state of SUBJECT per purpose and scope."""
        with open_vault(home) as vault:
            now = vault.clock.now()
            info = vault.subjects.get(subject, tenant=tenant)
            states = vault.consent.state(subject, tenant=tenant)
            ask = {s.key: vault.consent.ask_again_from(s) for s in states}
        if fmt == "json":
            emit_json("consent.state", {
                "subject_id": subject, "tenant": tenant, "jurisdiction": info.jurisdiction,
                "regime": info.regime, "restricted": info.restricted, "at": _iso(now),
                "consents": [{
                    "purpose": s.purpose, "scope": s.scope.value,
                    "status": s.status_at(now).value, "notice_id": s.notice_id,
                    "notice_version": s.notice_version, "expires_at": _iso(s.expires_at),
                    "updated_at": _iso(s.updated_at), "ask_again_from": _iso(ask[s.key])}
                    for s in states]})
            return
        out.print(f"subject {subject}: jurisdiction {info.jurisdiction or '—'}, regime "
                  f"{info.regime}{', RESTRICTED' if info.restricted else ''}")
        table = Table(title="Consent state")
        for column in ("purpose", "scope", "status", "notice", "expires", "since",
                       "ask again from"):
            table.add_column(column)
        for s in states:
            again = ask[s.key]
            table.add_row(s.purpose, s.scope.value, s.status_at(now).value,
                          f"{s.notice_id} v{s.notice_version}" if s.notice_id else "—",
                          s.expires_at.isoformat() if s.expires_at else "—",
                          s.updated_at.isoformat(timespec="seconds"),
                          "—" if again is None else (
                              again.isoformat(timespec="seconds") + (" (passed)"
                                                                     if again <= now else "")))
        out.print(table)

    @consent_app.command("history")
    @guard
    def history(subject: str, tenant: Tenant, fmt: FormatOpt = "table",
                home: Home = None) -> None:
        """Every consent event of SUBJECT, oldest first (the ledger is never rewritten)."""
        with open_vault(home) as vault:
            events = vault.consent.history(subject, tenant=tenant)
        if fmt == "json":
            emit_json("consent.history", {"subject_id": subject, "tenant": tenant, "events": [{
                "event_id": e.event_id, "occurred_at": _iso(e.occurred_at),
                "kind": e.kind.value, "purpose": e.purpose, "scope": e.scope.value,
                "method": e.method.value, "regime": e.regime, "notice_id": e.notice_id,
                "notice_version": e.notice_version, "source": e.source,
                "conflict": e.conflict or None} for e in events]})
            return
        table = Table(title="Consent history")
        for column in ("time", "event", "purpose", "scope", "method", "regime", "notice",
                       "source", "conflict", "receipt"):
            table.add_column(column, overflow="fold")
        for e in events:
            table.add_row(e.occurred_at.isoformat(timespec="seconds"), e.kind.value, e.purpose,
                          e.scope.value, e.method.value, e.regime,
                          f"{e.notice_id} v{e.notice_version}" if e.notice_id else "—",
                          e.source, e.conflict or "", e.event_id)
        out.print(table)

    @consent_app.command("receipt")
    @guard
    def receipt(
        event_id: str, tenant: Tenant,
        out_file: Annotated[Path | None, typer.Option("--out", metavar="FILE")] = None,
        home: Home = None,
    ) -> None:
        """The signed receipt (JSON) of a consent event."""
        with open_vault(home) as vault:
            data = vault.consent.receipt(event_id, tenant=tenant)
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        if out_file is None:
            sys.stdout.write(text)
        else:
            _write(out_file, text, "receipt")
            out.print(f"receipt written to {out_file}")

    @consent_app.command("verify-receipt")
    @guard
    def verify(
        file: Path,
        public_key: Annotated[Path | None, typer.Option(
            "--public-key", metavar="FILE", help="PEM from `vault keys export-public-key`; "
                                                 "no vault needed with it.")] = None,
        home: Home = None,
    ) -> None:
        """Check a receipt's Ed25519 signature (exit 1 if it does not verify)."""
        from vault.audit.checkpoint import load_public_key
        from vault.consent.receipts import verify_receipt

        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise InvalidData("the receipt file cannot be read as JSON", field="file") from None
        if public_key is not None:
            body = verify_receipt(data, load_public_key(public_key))
        else:
            with open_vault(home) as vault:
                body = vault.consent.verify_receipt(data)
        out.print(f"[green]receipt verified[/]: {body['consentReceiptID']}")

    @consent_app.command("report")
    @guard
    def report(
        tenant: Annotated[str | None, typer.Option("--tenant")] = None,
        fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
        out_file: Annotated[Path | None, typer.Option("--out", metavar="FILE")] = None,
        home: Home = None,
    ) -> None:
        """Consent summary: counts per regime, purpose and scope; opt-out rates; GPC."""
        check_format(fmt, _FORMATS)
        with open_vault(home) as vault:
            summary = vault.consent.summary(tenant=tenant)
        if fmt == "table":
            table = Table(title=f"Consent summary{' — ' + tenant if tenant else ''}",
                          box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
            for column in summary.columns:
                text_column = column in ("regime", "purpose", "scope")
                # Short headers, never-squashed names: fits an 80-column terminal.
                header = _SHORT.get(column, column)
                table.add_column(header, justify="left" if text_column else "right",
                                 no_wrap=True, min_width=len(header))
            for row in summary.rows:
                table.add_row(*[f"{row[c]:.1%}" if c == "opt_out_rate" else str(row[c])
                                for c in summary.columns])
            out.print(table)
            out.print(f"GPC signals: {summary.gpc_signals} (overriding an opt-in: "
                      f"{summary.gpc_conflicts})")
            return
        text = summary.to_csv() if fmt == "csv" else summary.to_json()
        if out_file is None:
            sys.stdout.write(text)
        else:
            _write(out_file, text, "consent report")
            out.print(f"{fmt} consent report written to {out_file} ({len(summary.rows)} rows)")
