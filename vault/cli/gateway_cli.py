"""``vault gateway``: the credentials of the HTTP gateway's callers.

``register(app)`` adds the ``gateway`` group to the ``vault`` command. The
credentials live in :mod:`vault.identity`; every change is audited.

Examples::

    vault gateway keys create billing --actor crm --tenant acme
    vault gateway keys create dana-laptop --actor dana --tenant acme --kind person \\
        --expires 2027-06-30
    vault gateway keys list --tenant acme
    vault gateway keys revoke billing
    vault gateway totp enrol dana-laptop
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vault.cli._common import guard, open_vault, out
from vault.cli._time import parse_when

__all__ = ["register"]

Home = Annotated[Path | None, typer.Option("--home", help="Vault folder. Env: VAULT_HOME.",
                                           show_default=False)]
KeyArg = Annotated[str, typer.Argument(help="Key id or name.")]


def register(app: typer.Typer) -> None:
    """Add the ``gateway`` command group to ``app``."""
    gateway_app = typer.Typer(help="Credentials of the HTTP gateway: API keys, TOTP.",
                              no_args_is_help=True)
    keys_app = typer.Typer(help="API keys (vk_<id>_<secret>): create, list, revoke.",
                           no_args_is_help=True)
    totp_app = typer.Typer(help="TOTP second factors of person keys.", no_args_is_help=True)
    app.add_typer(gateway_app, name="gateway")
    gateway_app.add_typer(keys_app, name="keys")
    gateway_app.add_typer(totp_app, name="totp")

    @keys_app.command("create")
    @guard
    def keys_create(
        name: str,
        actor: Annotated[str, typer.Option("--actor", help="The actor (Casbin subject).")],
        tenant: Annotated[str, typer.Option("--tenant", help="The actor's tenant.")],
        kind: Annotated[str, typer.Option("--kind", help="service | person")] = "service",
        expires: Annotated[str | None, typer.Option(
            "--expires", help="Expiry (ISO date or time, UTC).")] = None,
        region: Annotated[str | None, typer.Option(
            "--region", help="Where the caller processes data (e.g. US): transfers.")] = None,
        recipient: Annotated[str | None, typer.Option(
            "--recipient", help="Another handler the caller provides data to.")] = None,
        home: Home = None,
    ) -> None:
        """Create an API key and print it once (only a keyed hash is stored)."""
        with open_vault(home) as vault:
            key, secret = vault.identity.create_key(
                name, actor_id=actor, tenant=tenant, kind=kind, region=region,
                recipient=recipient, expires_at=parse_when(expires, "--expires"))
        out.print(f"API key {key.id} ({key.kind.value}) for {key.actor} in {key.tenant}; "
                  "shown once, keep it in a secret store:", markup=False, highlight=False)
        sys.stdout.write(secret + "\n")

    @keys_app.command("list")
    @guard
    def keys_list(
        tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")]
        = None,
        home: Home = None,
    ) -> None:
        """List API keys (never their secrets)."""
        with open_vault(home) as vault:
            keys = vault.identity.list_keys(tenant=tenant)
        table = Table(title="API keys")
        for col in ("id", "name", "kind", "actor", "tenant", "expires", "state", "totp"):
            table.add_column(col, overflow="fold")
        for k in keys:
            state = "revoked" if k.revoked_at else "live"
            table.add_row(k.id, k.name, k.kind.value, k.actor, k.tenant,
                          k.expires_at.isoformat() if k.expires_at else "-", state,
                          "yes" if k.totp else "-")
        out.print(table)

    @keys_app.command("revoke")
    @guard
    def keys_revoke(key: KeyArg, home: Home = None) -> None:
        """Revoke an API key for good (refused by every gateway from its next use)."""
        with open_vault(home) as vault:
            out.print(f"API key {vault.identity.revoke_key(key).id} revoked")

    @totp_app.command("enrol")
    @guard
    def totp_enrol(key: Annotated[str, typer.Argument(help="Person key id or name.")],
                   home: Home = None) -> None:
        """Give a person key a TOTP secret; prints the provisioning URI once."""
        with open_vault(home) as vault:
            uri = vault.identity.enrol_totp(key)
        out.print("Scan this into an authenticator app (shown once):", markup=False)
        sys.stdout.write(uri + "\n")
