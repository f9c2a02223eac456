"""The ``vault`` command line: init, serve, demo, keys, roles, policy check, audit, consent, dsar.

Only the CLI (and the gateway) read ``VAULT_*`` environment variables. Exit
codes: 0 success; 1 a Vault error (one line on stderr saying why); 2 a usage
error; 3 the audit log failed verification.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

# The package loads its names on first use: `vault --help` imports no database code.
import vault as api
from vault import __version__
from vault.cli import consent_cli, dsar_cli, gateway_cli, report_cli, retention_cli
from vault.cli._common import (
    FormatOpt,
    HomeOpt,
    TenantOpt,
    YesOpt,
    configure_logging,
    confirm,
    emit_json,
    err,
    fail,
    guard,
    open_vault,
    operator_context,
    out,
    progress_bar,
    settings_from_env,
)

if TYPE_CHECKING:
    from vault.facade import Vault

__all__ = ["app", "main"]

app = typer.Typer(
    name="vault",
    help="Vault: encrypted, access-controlled, audited customer data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
keys_app = typer.Typer(help="Key-encryption keys: status, rotation, migration, retirement.",
                       no_args_is_help=True)
roles_app = typer.Typer(help="Assign, revoke and list roles.", no_args_is_help=True)
policy_app = typer.Typer(help="Inspect policy decisions.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify the audit log.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(roles_app, name="roles")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")

def _print_version(shown: bool) -> None:
    if shown:
        out.print(f"vault {__version__}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs on stderr.")]
    = False,
    operator: Annotated[str | None, typer.Option(
        "--operator", envvar="VAULT_OPERATOR", metavar="NAME",
        help="Who runs this command, recorded with the OS user and host in every audit "
             "entry it causes (default: the OS login).")] = None,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print Vault's version and exit.")] = False,
) -> None:
    """Vault: encrypted, access-controlled, audited customer data."""
    configure_logging(verbose, gateway=ctx.invoked_subcommand == "serve")
    if ctx.invoked_subcommand != "serve":  # the gateway's entries name their caller
        ctx.with_resource(operator_context(operator))


@app.command()
@guard
def init(
    ctx: typer.Context,
    home: HomeOpt = None,
    database_url: Annotated[str | None, typer.Option(help="Data database URL.")] = None,
    keystore_url: Annotated[str | None, typer.Option(help="Key store URL (a separate DB).")] = None,
    key_file: Annotated[Path | None, typer.Option(help="Key file path (created 0600).")] = None,
    key_provider: Annotated[str | None, typer.Option(
        "--key-provider", metavar="URI",
        help="Where the KEKs live: a key file path (default), pkcs11:token=...;object=..."
             "?module-path=... (PIN from pin-source or VAULT_PKCS11_PIN), or "
             "aws-kms:<key ARN or alias>. Env: VAULT_KEY_PROVIDER.")] = None,
    policies: Annotated[Path | None, typer.Option(help="Policies folder.")] = None,
    audit_chains: Annotated[int | None, typer.Option(help="Audit hash chains.")] = None,
    postgres_roles: Annotated[str | None, typer.Option(
        "--postgres-roles", metavar="ROLE",
        help="PostgreSQL: create ROLE for the application, with only SELECT and INSERT "
             "on the audit log. Password from VAULT_APP_ROLE_PASSWORD.")] = None,
    admin_tenant: Annotated[str, typer.Option(
        "--admin-tenant", metavar="T",
        help="The tenant in which the operator (--operator, default the OS login) "
             "becomes the first administrator.")] = "default",
) -> None:
    """Create a vault: KEK (key file, HSM or KMS), key store, data database, default
    policy; the operator who runs it is its first administrator (audited)."""
    settings = api.VaultSettings.from_env(
        home=home, database_url=database_url, keystore_url=keystore_url, key_file=key_file,
        key_provider=key_provider, policies=policies, audit_chains=audit_chains,
    )
    root = ctx.find_root().params.get("operator")
    try:
        first_admin = api.Actor(root if isinstance(root, str) else getpass.getuser(), admin_tenant)
    except (api.VaultError, OSError, KeyError):  # no login name, or not an actor id
        raise fail("the operator name is not an actor id; pass --operator with letters, "
                   "digits and ._@:- only", 2) from None
    with api.Vault.init(settings=settings, first_admin=first_admin) as vault:
        out.print(f"[green]initialised[/] vault in {vault.settings.home}")
        out.print(f"  admin      {first_admin.id} in tenant {first_admin.tenant}",
                  markup=False, highlight=False)
        status = vault.keys.status()
        if status.provider == "file":
            out.print(f"  key file   {vault.settings.resolved_key_file} "
                      "(mode 0600; back it up apart)")
        else:
            out.print(f"  KEK        version {status.current_version} in {status.provider} "
                      "(no key file; root keys wrapped in the key store)", markup=False,
                      highlight=False)
        out.print(f"  roles      {', '.join(sorted(vault.roles.known()))}")
        if postgres_roles:
            _grant_roles(vault, postgres_roles)


def _grant_roles(vault: Vault, role: str) -> None:
    """Create or update the PostgreSQL application role (password from
    VAULT_APP_ROLE_PASSWORD, never printed) with exactly its privileges."""
    import os

    from vault.store.roles import grant_app_role, grant_keystore_role

    password = os.environ.get("VAULT_APP_ROLE_PASSWORD")
    grant_app_role(vault.engine, role, password=password)
    store = vault.keystore.engine
    if store.dialect.name == "postgresql":
        grant_keystore_role(store, role, password=password)
    out.print(f"  app role   {role}: SELECT, INSERT on audit_log; "
              "connect the application as this role")


@app.command()
@guard
def upgrade(
    home: HomeOpt = None,
    postgres_roles: Annotated[str | None, typer.Option(
        "--postgres-roles", metavar="ROLE",
        help="PostgreSQL: grant ROLE (made by `init --postgres-roles`) its privileges on "
             "the tables this version adds. Password from VAULT_APP_ROLE_PASSWORD, "
             "if set.")] = None,
) -> None:
    """Migrate an existing vault to this version's schema (idempotent; audited)."""
    with api.Vault.upgrade(settings=settings_from_env(home)) as vault:
        out.print(f"[green]up to date[/] vault in {vault.settings.home}")
        if postgres_roles:
            _grant_roles(vault, postgres_roles)


@app.command()
@guard
def demo(
    home: HomeOpt = None,
    customers: Annotated[int, typer.Option(help="How many demo customers.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed for Faker.")] = 7,
) -> None:
    """Load demo customers (EU, US-CA, CN), show what each role sees, verify the audit log."""
    from vault.cli.demo import run_demo

    ok = run_demo(settings_from_env(home), customers=customers, seed=seed, out=out,
                  progress_factory=progress_bar)
    if not ok:
        raise fail("audit verification failed", 3)


@app.command()
@guard
def serve(
    home: HomeOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8600,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    tls_cert: Annotated[Path | None, typer.Option(
        "--tls-cert", metavar="FILE", help="PEM certificate (chain): serve HTTPS, send HSTS.")]
    = None,
    tls_key: Annotated[Path | None, typer.Option(
        "--tls-key", metavar="FILE", help="PEM private key of --tls-cert.")] = None,
) -> None:
    """Run the HTTP gateway under uvicorn (settings from VAULT_* and VAULT_GATEWAY_*)."""
    import os

    from vault.gateway import serve as run_gateway

    if home is not None:
        # The workers build their app from the environment (uvicorn's factory).
        os.environ["VAULT_HOME"] = str(home)
    scheme = "https" if tls_cert else "http"
    err.print(f"vault gateway on {scheme}://{host}:{port} ({workers} worker(s))",
              markup=False, highlight=False)
    run_gateway(host=host, port=port, workers=workers, tls_cert=tls_cert, tls_key=tls_key)


# ---------------------------------------------------------------- keys


@keys_app.command("status")
@guard
def keys_status(home: HomeOpt = None, fmt: FormatOpt = "table") -> None:
    """Show the key provider, KEK versions and how many data keys each one wraps
    (no secret: URIs carry no PIN)."""
    with open_vault(home) as vault:
        status = vault.keys.status()
        owner = {v: p.kind for p in status.providers for v in p.versions}
        if fmt == "json":
            emit_json("keys.status", {
                "provider": status.provider, "current_version": status.current_version,
                "versions": [{"version": v, "provider": owner.get(v, status.provider),
                              "current": v == status.current_version,
                              "data_keys": status.data_keys_by_version.get(v, 0)}
                             for v in status.versions],
                "providers": [{"kind": p.kind, "uri": p.uri, "versions": list(p.versions)}
                              for p in status.providers]})
            return
        table = Table(title=f"Key-encryption keys (provider: {status.provider})")
        table.add_column("version", justify="right")
        table.add_column("provider")
        table.add_column("state")
        table.add_column("data keys", justify="right")
        for version in status.versions:
            state = "current" if version == status.current_version else "old"
            table.add_row(str(version), owner.get(version, status.provider), state,
                          str(status.data_keys_by_version.get(version, 0)))
        out.print(table)
        for info in status.providers:
            out.print(f"  {info.kind:<8} {info.uri}", markup=False, highlight=False)


@keys_app.command("rotate")
@guard
def keys_rotate(
    home: HomeOpt = None,
    resume: Annotated[bool, typer.Option(help="Finish an interrupted rotation.")] = False,
) -> None:
    """Create a new KEK version and rewrap every data key (data rows untouched)."""
    with open_vault(home) as vault, progress_bar() as bar:
        task = bar.add_task("rewrapping data keys", total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = vault.keys.rotate(progress=step, resume=resume)
    out.print(f"KEK version {result.new_version} is current; "
              f"{result.rewrapped} data keys rewrapped")


@keys_app.command("migrate")
@guard
def keys_migrate(
    to: Annotated[str, typer.Option("--to", metavar="URI",
                                    help="The new key provider (key file path, pkcs11:..., "
                                         "aws-kms:...).")],
    home: HomeOpt = None,
) -> None:
    """Rewrap every data key (and the root keys) under another key provider, online;
    run it again to finish after a crash. Data rows are untouched."""
    with open_vault(home) as vault, progress_bar() as bar:
        task = bar.add_task("migrating data keys", total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = vault.keys.migrate(to, progress=step)
    out.print(f"{result.rewrapped} data keys rewrapped under {result.kind} KEK version "
              f"{result.new_version}", markup=False, highlight=False)
    out.print(f"now set VAULT_KEY_PROVIDER={to} (or --key-provider) for every "
              "process, then retire the old KEK versions with `vault keys retire N`",
              markup=False, highlight=False)


@keys_app.command("retire")
@guard
def keys_retire(version: int, home: HomeOpt = None, yes: YesOpt = False) -> None:
    """Delete KEK VERSION for good (refused while any data key depends on it); asks
    first on a terminal (``--yes`` for scripts)."""
    confirm(f"KEK version {version} will be deleted for good", yes=yes)
    with open_vault(home) as vault:
        vault.keys.retire(version)
    out.print(f"KEK version {version} retired")


@keys_app.command("check-erasures")
@guard
def keys_check_erasures(
    home: HomeOpt = None,
    repair: Annotated[bool, typer.Option(
        "--repair", help="Destroy the resurrected keys again and mark the subjects.")] = False,
) -> None:
    """Find subjects the audit log says were crypto-shredded whose data key is live
    again (a key store restored from an older copy); exit 3 if any is left."""
    with open_vault(home) as vault:
        found = vault.keys.check_erasures(repair=repair)
    if not found:
        out.print("[green]no erased subject has a live data key[/]")
        return
    for r in found:
        where = f"entry {r.audit_seq}" if r.audit_seq is not None else "marker only"
        err.print(f"  {r.tenant:<20} {r.pseudonym[:16]}  {r.action or '-':<16} {where}"
                  f"{'' if r.marked else '  (not marked)'}", markup=False, highlight=False)
    if repair:
        out.print(f"{len(found)} resurrected data key(s) destroyed again")
        return
    raise fail(f"{len(found)} erased subject(s) have a live data key again; "
               "run `vault keys check-erasures --repair`", 3)


@keys_app.command("export-public-key")
@guard
def keys_export_public_key(
    home: HomeOpt = None,
    out_file: Annotated[Path | None, typer.Option("--out", metavar="FILE",
                                                  help="Write the PEM here (default: stdout).")]
    = None,
) -> None:
    """Print the Ed25519 public key that verifies audit checkpoints (safe to publish)."""
    with open_vault(home) as vault:
        pem = vault.audit.export_public_key(out_file)
    if out_file is None:
        sys.stdout.write(pem.decode())
    else:
        out.print(f"public key written to {out_file}")


# ---------------------------------------------------------------- roles


@roles_app.command("assign")
@guard
def roles_assign(user: str, role: str, tenant: TenantOpt = "default", home: HomeOpt = None) -> None:
    """Give USER the ROLE in a tenant."""
    _change_role(home, user, role, tenant, grant=True)


@roles_app.command("revoke")
@guard
def roles_revoke(user: str, role: str, tenant: TenantOpt = "default", home: HomeOpt = None) -> None:
    """Take ROLE in a tenant away from USER."""
    _change_role(home, user, role, tenant, grant=False)


def _change_role(home: Path | None, user: str, role: str, tenant: str, *, grant: bool) -> None:
    with open_vault(home) as vault:
        if grant:
            changed = vault.roles.assign(user, role, tenant=tenant)
            said = "now has" if changed else "already had"
        else:
            changed = vault.roles.revoke(user, role, tenant=tenant)
            said = "no longer has" if changed else "did not have"
    out.print(f"{user} {said} role {role} in {tenant}")


@roles_app.command("list")
@guard
def roles_list(
    home: HomeOpt = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """List role assignments."""
    with open_vault(home) as vault:
        if fmt == "json":
            emit_json("roles.assignments", {"assignments": [
                {"user": a.user, "role": a.role, "tenant": a.tenant}
                for a in vault.roles.list(tenant=tenant)]})
            return
        table = Table(title="Role assignments")
        for col in ("user", "role", "tenant"):
            table.add_column(col)
        for a in vault.roles.list(tenant=tenant):
            table.add_row(a.user, a.role, a.tenant)
        out.print(table)


# ---------------------------------------------------------------- policy


@policy_app.command("check")
@guard
def policy_check(
    actor: str,
    obj: Annotated[str, typer.Argument(metavar="COLLECTION.FIELD")],
    action: str,
    purpose: Annotated[str, typer.Option("--purpose", help="Purpose of use.")],
    tenant: TenantOpt = "default",
    home: HomeOpt = None,
) -> None:
    """Say whether ACTOR may do ACTION on COLLECTION.FIELD for a purpose (exit 0 if allowed,
    4 if denied, 1 for an error such as a field that does not exist)."""
    with open_vault(home) as vault:
        allowed = vault.policy.check(api.Actor(actor, tenant), obj, action, purpose=purpose)
    if allowed:
        out.print(f"[green]allow[/] {actor} {action} {obj} for {purpose} in {tenant}")
        return
    out.print(f"[red]deny[/] {actor} {action} {obj} for {purpose} in {tenant}")
    raise typer.Exit(4)  # a decision, not an error (docs/cli.md)


@policy_app.command("pending")
@guard
def policy_pending(
    home: HomeOpt = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
) -> None:
    """List rule changes that grant a data action and wait for a second administrator."""
    with open_vault(home) as vault:
        table = Table(title="Pending policy changes")
        for col in ("id", "change", "tenant", "requested by", "at"):
            table.add_column(col, overflow="fold")
        for c in vault.policy.pending(tenant=tenant):
            table.add_row(c.id, c.rule, c.tenant, c.requested_by, c.requested_at.isoformat())
        out.print(table)


@policy_app.command("approve")
@guard
def policy_approve(
    change_id: Annotated[str, typer.Argument(metavar="CHANGE_ID")],
    reject: Annotated[bool, typer.Option("--reject", help="Decline it instead.")] = False,
    home: HomeOpt = None,
) -> None:
    """Apply (or, with --reject, decline) a pending change; audited."""
    with open_vault(home) as vault:
        change = (vault.policy.reject(change_id) if reject
                  else vault.policy.approve(change_id))
    out.print(f"{change.state}: {change.rule} in {change.tenant}", markup=False,
              highlight=False)


# ---------------------------------------------------------------- audit


@audit_app.command("verify")
@guard
def audit_verify(
    home: HomeOpt = None,
    checkpoints: Annotated[Path | None, typer.Option(
        "--checkpoints", metavar="DIR",
        help="Also check every signed checkpoint in DIR against the log.")] = None,
    public_key: Annotated[Path | None, typer.Option(
        "--public-key", metavar="FILE",
        help="PEM public key of the checkpoints (from `vault keys export-public-key`). "
             "No key file or other secret is needed: without one, only the data "
             "database (--database-url, or the configured one) is read.")] = None,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Verify this data database without opening the vault "
                               "(an auditor's read-only access is enough).")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Processes that walk the chains at once (default: one per "
                                 "core for a log of 100,000 entries or more; 1: none "
                                 "besides this one).")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Recompute every audit hash chain (and checkpoints); exit 3 naming any damage."""
    from vault.audit.offline import verify_database

    if database_url is None and public_key is not None:
        # An auditor's machine holds no key file: read the data database only.
        settings = settings_from_env(home)
        if settings.key_provider is None and not settings.resolved_key_file.exists():
            database_url = settings.resolved_database_url
    # Drawn from this thread: workers=None only forks from a single-threaded process.
    with progress_bar(auto_refresh=False) as bar:
        task = bar.add_task("verifying audit chains", total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            bar.refresh()

        if database_url is not None:
            report = verify_database(database_url, checkpoints=checkpoints,
                                     public_key=public_key, progress=step, workers=workers)
        else:
            with open_vault(home) as vault:
                report = vault.audit.verify(progress=step, checkpoints=checkpoints,
                                            public_key=public_key, workers=workers)
    if fmt == "json":
        emit_json("audit.verify", {
            "ok": report.ok, "entries": report.entries, "chains": report.chains,
            "checkpoints": report.checkpoints, "reason": report.reason,
            "detail": report.detail or None, "first_bad_seq": report.first_bad_seq,
            "findings": [{"kind": f.kind.value, "chain": f.chain, "position": f.position,
                          "seq": f.seq, "detail": f.detail} for f in report.findings]})
        if not report.ok:
            raise typer.Exit(3)
        return
    if report.ok:
        extra = f", {report.checkpoints} signed checkpoints hold" if checkpoints else ""
        out.print(f"[green]audit log verified[/]: {report.entries} entries in "
                  f"{report.chains} chains{extra}")
        return
    for finding in report.findings[:20]:
        where = ", ".join(part for part in (
            f"chain {finding.chain}" if finding.chain is not None else "",
            f"position {finding.position}" if finding.position is not None else "",
            f"entry {finding.seq}" if finding.seq is not None else "") if part)
        err.print(f"  {finding.kind.value:<28} {where:<36} {finding.detail}", markup=False,
                  highlight=False)
    where = f"entry {report.first_bad_seq}" if report.first_bad_seq else f"chain {report.chain}"
    raise fail(f"audit log damaged at {where}: {report.reason} ({report.detail}); "
                f"{len(report.findings)} finding(s)", 3)


@audit_app.command("checkpoint")
@guard
def audit_checkpoint(
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR",
                                          help="Folder outside the database for checkpoints.")],
    home: HomeOpt = None,
) -> None:
    """Verify the log, then write a signed checkpoint of every chain head (schedule it)."""
    with open_vault(home) as vault:
        path = vault.audit.checkpoint(out_dir)
    out.print(f"[green]checkpoint written[/]: {path}")


report_cli.register(audit_app)
consent_cli.register(app)
gateway_cli.register(app)
retention_cli.register(app)
dsar_cli.register(app)


def main() -> None:
    """Entry point of the ``vault`` script."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
