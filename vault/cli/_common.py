"""What every ``vault`` command shares: consoles, options, opening the vault,
one-line errors and progress bars.

Only the CLI (and the gateway) read ``VAULT_*`` environment variables.
"""

from __future__ import annotations

import getpass
import logging
import re
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

# The package loads its names on first use (``api.Vault``): `vault --help` and the
# other light commands import no database, policy or crypto code.
import vault as api
from vault.errors import VaultError

if TYPE_CHECKING:
    from rich.progress import Progress

    from vault.config import VaultSettings
    from vault.facade import Vault
    from vault.types import Actor

__all__ = ["JSON_SCHEMA_VERSION", "FormatOpt", "HomeOpt", "OtpOpt", "TenantOpt", "YesOpt",
           "check_format", "configure_logging", "confirm", "emit_json", "err", "fail",
           "guard", "open_vault", "operator_context", "out", "progress_bar",
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
#: The ``schema_version`` of every ``--format json`` document of the CLI (docs/cli.md).
JSON_SCHEMA_VERSION = 1


def check_format(fmt: str, choices: tuple[str, ...] = ("table", "json")) -> str:
    """``fmt`` if it is one of ``choices``.

    Raises:
        typer.BadParameter: another format (a usage error, exit code 2).
    """
    if fmt not in choices:
        raise typer.BadParameter(f"must be one of {', '.join(choices)}",
                                 param_hint="'--format'")
    return fmt


def _table_or_json(value: str) -> str:
    return check_format(value)


FormatOpt = Annotated[str, typer.Option(
    "--format", metavar="FORMAT", callback=_table_or_json,
    help="table | json (json: a stable schema, see docs/cli.md)")]


def emit_json(kind: str, body: dict[str, Any]) -> None:
    """Write one ``--format json`` document to stdout: ``{"schema_version": 1,
    "kind": kind, **body}``, indented, UTF-8, one trailing newline (no colour,
    no wrapping, whatever the terminal)."""
    import json

    doc = {"schema_version": JSON_SCHEMA_VERSION, "kind": kind, **body}
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()
OtpOpt = Annotated[str | None, typer.Option(
    "--otp", metavar="CODE", help="A TOTP code of your person key (enrolled with `vault "
    "gateway totp enrol`): the second factor that exports, erasure and key, role and "
    "policy changes need (step-up).")]
YesOpt = Annotated[bool, typer.Option(
    "--yes", "-y", help="Do not ask for confirmation (for scripts and scheduled jobs).")]



class _CLIHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The CLI's own handler on the ``vault`` logger (one at a time)."""


def configure_logging(verbose: bool, *, gateway: bool = False) -> None:
    """The CLI is an application, so it says where logs go: stderr, redacted, WARNING
    and above (DEBUG with ``-v``), never stdout.

    Vault's library modules log to the standard library's ``vault`` logger when
    structlog is not configured (:mod:`vault.logging`), so a light command imports
    no structlog; structlog is configured (stderr, redacted) when it is loaded
    already or for ``serve``, whose gateway logs through it.
    """
    level = logging.DEBUG if verbose else logging.WARNING
    logger = logging.getLogger("vault")
    for old in [h for h in logger.handlers if isinstance(h, _CLIHandler)]:
        logger.removeHandler(old)
    handler = _CLIHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)-8s] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.NOTSET)
    if gateway:
        _configure_structlog(level)
    elif "structlog" in sys.modules:
        # Loaded and perhaps configured by someone else in this process (a test):
        # unconfigured, Vault's events take the handler above, never stdout.
        sys.modules["structlog"].reset_defaults()


def _configure_structlog(level: int) -> None:
    import structlog

    from vault.logging import RedactingProcessor

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            RedactingProcessor(),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def settings_from_env(home: Path | None) -> VaultSettings:
    return api.VaultSettings.from_env(home=home)


@contextmanager
def open_vault(home: Path | None) -> Iterator[Vault]:
    with api.Vault.open(settings=settings_from_env(home)) as vault:
        yield vault


def fail(message: str, code: int = 1) -> typer.Exit:
    from rich.markup import escape

    # One line whatever the terminal's width: a script reads it, a person scrolls.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True,
              soft_wrap=True)
    return typer.Exit(code)


def guard(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a command as its operator (the audit context) and turn every VaultError
    into a one-line message and exit code 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            with _as_operator():
                return fn(*args, **kwargs)
        except VaultError as exc:
            reason = getattr(exc, "reason", None)
            code = f"{exc.code}: {reason}" if reason else exc.code
            hint = getattr(exc, "hint", None)
            raise fail(f"{exc.message} [{code}]" + (f"; hint: {hint}" if hint else "")) from None

    return wrapper


def progress_bar(*, auto_refresh: bool = True) -> Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal (nothing in a
    cron job's log); ``auto_refresh=False`` draws only on ``refresh()`` (no drawing
    thread)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

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


# The operator of the running command, set by the root callback, entered as the
# audit context by ``guard`` when the command runs (so that `vault keys --help`
# imports no audit code).
_OPERATOR_OF_COMMAND: ContextVar[dict[str, str] | None] = ContextVar(
    "vault_cli_operator", default=None)


@contextmanager
def _operator_pending(values: dict[str, str]) -> Iterator[None]:
    token = _OPERATOR_OF_COMMAND.set(values)
    try:
        yield
    finally:
        _OPERATOR_OF_COMMAND.reset(token)


def _as_operator() -> AbstractContextManager[None]:
    values = _OPERATOR_OF_COMMAND.get()
    if values is None:
        return nullcontext()
    from vault.audit.context import audit_context

    return audit_context(**values)


def operator_context(operator: str | None) -> AbstractContextManager[None]:
    """The audit context of one CLI command: the operator (``--operator``, else
    ``VAULT_OPERATOR``, else the OS login), the OS user and the host, in every
    audit entry the command causes (every command runs through :func:`guard`,
    which enters it).

    Raises:
        typer.BadParameter: a name that is not a plain id (exit code 2).
    """
    user = _os_user()
    name = user if operator is None else operator
    if not _OPERATOR.fullmatch(name):
        raise typer.BadParameter("must be a plain name: letters, digits and ._@+- "
                                 "(at most 128)", param_hint="--operator")
    return _operator_pending({"operator": name, "os_user": user,
                              "host": socket.gethostname()[:128] or "unknown"})


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
    from vault.identity import AuthenticationFailed

    try:
        return vault.identity.step_up(actor, otp)
    except AuthenticationFailed:
        raise fail("the TOTP code was not accepted (wrong, used before, or no person key "
                   "of this actor is enrolled)", 1) from None
