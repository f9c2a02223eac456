"""What every ``vault`` command shares: consoles, options, opening the vault,
one-line errors and progress bars.

Only the CLI (and the gateway) read ``VAULT_*`` environment variables.
"""

from __future__ import annotations

import getpass
import re
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vault.audit.context import audit_context
from vault.config import VaultSettings
from vault.errors import VaultError
from vault.facade import Vault
from vault.identity import AuthenticationFailed
from vault.types import Actor

__all__ = ["HomeOpt", "OtpOpt", "TenantOpt", "YesOpt", "configure_logging", "confirm", "err",
           "fail", "guard", "open_vault", "operator_context", "out", "progress_bar",
           "settings_from_env", "stepped_up"]

out = Console()
err = Console(stderr=True)

T = TypeVar("T")

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Vault folder (embedded default). Env: VAULT_HOME.",
                 show_default=False),
]
TenantOpt = Annotated[str, typer.Option("--tenant", help="Tenant (domain) of the role.")]
OtpOpt = Annotated[str | None, typer.Option(
    "--otp", metavar="CODE", help="A TOTP code of your person key (enrolled with `vault "
    "gateway totp enrol`): the second factor that exports, erasure and key, role and "
    "policy changes need (step-up).")]
YesOpt = Annotated[bool, typer.Option(
    "--yes", "-y", help="Do not ask for confirmation (for scripts and scheduled jobs).")]



def configure_logging(verbose: bool) -> None:
    """The CLI is an application, so it configures structlog: stderr, redacted."""
    import logging

    import structlog

    from vault.logging import RedactingProcessor

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            RedactingProcessor(),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.WARNING
        ),
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def settings_from_env(home: Path | None) -> VaultSettings:
    return VaultSettings.from_env(home=home)


@contextmanager
def open_vault(home: Path | None) -> Iterator[Vault]:
    with Vault.open(settings=settings_from_env(home)) as vault:
        yield vault


def fail(message: str, code: int = 1) -> typer.Exit:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    return typer.Exit(code)


def guard(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn every VaultError into a one-line message and exit code 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except VaultError as exc:
            raise fail(f"{exc.message} [{exc.code}]") from None

    return wrapper


def progress_bar(*, auto_refresh: bool = True) -> Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal (nothing in a
    cron job's log); ``auto_refresh=False`` draws only on ``refresh()`` (no drawing
    thread)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        auto_refresh=auto_refresh,
        disable=not err.is_terminal,
    )


_OPERATOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


def _os_user() -> str:
    try:
        return getpass.getuser()[:128] or "unknown"
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "unknown"


def operator_context(operator: str | None) -> AbstractContextManager[None]:
    """The audit context of one CLI command: the operator (``--operator``, else
    ``VAULT_OPERATOR``, else the OS login), the OS user and the host, in every
    audit entry the command causes.

    Raises:
        typer.BadParameter: a name that is not a plain id (exit code 2).
    """
    user = _os_user()
    name = user if operator is None else operator
    if not _OPERATOR.fullmatch(name):
        raise typer.BadParameter("must be a plain name: letters, digits and ._@+- "
                                 "(at most 128)", param_hint="--operator")
    return audit_context(operator=name, os_user=user,
                         host=socket.gethostname()[:128] or "unknown")


def confirm(what: str, *, yes: bool) -> None:
    """Ask before a destructive command: on a terminal the operator answers (the
    default is no); ``--yes`` skips the question. Without a terminal and without
    ``--yes`` the command is refused with exit code 2 (a usage error), so a script
    that forgot ``--yes`` never destroys data by accident, nor hangs on a prompt.

    Raises:
        typer.Exit: 2 without a terminal and without ``--yes``; 1 when the operator
            says no (nothing was changed).
    """
    if yes:
        return
    if not sys.stdin.isatty():
        # One short line (a cron log is not a terminal: rich wraps at 80 columns).
        raise fail("this cannot be undone: pass --yes to run it without a terminal", 2)
    if not typer.confirm(f"{what}. Continue?", default=False, err=True):
        raise fail("not confirmed: nothing was changed", 1)


def stepped_up(vault: Vault, actor: Actor | None, otp: str | None) -> Actor | None:
    """``actor`` with the second factor ``--otp`` proves (a TOTP code of its person
    key), or ``actor`` as it is without a code.

    Raises:
        typer.Exit: 2 for ``--otp`` without ``--actor``; 1 when the code is refused
            (audited by the identity service; never says which check failed).
    """
    if otp is None:
        return actor
    if actor is None:
        raise fail("--otp needs --actor: the code proves who you are", 2)
    try:
        return vault.identity.step_up(actor, otp)
    except AuthenticationFailed:
        raise fail("the TOTP code was not accepted (wrong, used before, or no person key "
                   "of this actor is enrolled)", 1) from None
