"""Helpers shared by test files: the demo users and the shipped policy's names, a
key provider that can hold a reader inside ``unwrap``, a watch on the SELECTs an
engine sends, the audit log's triggers taken away or made to refuse inserts, key
stores made on one key database, and actors who proved a second factor."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, event, text

from vault import Actor, SecondFactor
from vault.crypto.keys import KeyContext, KeyProvider, LocalKeyProvider
from vault.crypto.keystore import KeyStore
from vault.store.engine import is_postgres, make_engine

# Demo users of the shipped policies in tenant ``acme`` (their roles: conftest.ROLE_USERS).
ANDY = Actor("andy", "acme")  # analyst
CRM = Actor("crm", "acme")  # crm_service
DANA = Actor("dana", "acme")  # dpo
MAYA = Actor("maya", "acme")  # marketing
SALLY = Actor("sally", "acme")  # sales_rep
SAM = Actor("sam", "acme")  # support_agent

# The fields of the shipped ``customers`` collection, in schema order.
CUSTOMER_FIELDS = (
    "full_name",
    "email",
    "phone",
    "postal_address",
    "birth_date",
    "national_id",
    "country",
    "preferred_language",
    "marketing_segment",
    "device_info",
    "support_notes",
)

# The purposes in the shipped policies/purposes.toml, in file order.
PURPOSE_NAMES = (
    "account_management",
    "customer_support",
    "sales_outreach",
    "marketing",
    "sale",
    "sharing",
    "analytics",
    "legal_obligation",
    "dsar_fulfilment",
    "security",
)


P = TypeVar("P", bound=LocalKeyProvider)


class PausingProvider(LocalKeyProvider):
    """Runs ``on_unwrap`` (once) before unwrapping: a reader holding a row in hand."""

    on_unwrap: Any = None

    def unwrap(self, version: int, wrapped: bytes, *,
               context: KeyContext | None = None) -> bytes:
        hook, self.on_unwrap = self.on_unwrap, None
        if hook is not None:
            hook()
        return super().unwrap(version, wrapped, context=context)


def new_key_file(cls: type[P], folder: Path) -> P:
    """A new key file in ``folder``, opened as ``cls`` (a LocalKeyProvider subclass)."""
    made = cls.create(folder / "keyfile.json")
    assert isinstance(made, cls)
    return made


def disable_triggers(engine: Engine, *, again: bool = False) -> None:
    """What an attacker with DDL rights does first: let the audit log be changed
    (``again``: as often as needed; otherwise SQLite's triggers must still be there)."""
    if_exists = "IF EXISTS " if again else ""
    with engine.begin() as conn:
        if is_postgres(engine):
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            conn.execute(text(f"DROP TRIGGER {if_exists}audit_log_no_update"))
            conn.execute(text(f"DROP TRIGGER {if_exists}audit_log_no_delete"))


def refuse_audit_inserts(engine: Engine, name: str, message: str) -> Callable[[], None]:
    """Make every INSERT into the audit log fail with ``message`` (a trigger named
    ``name``, as a full or broken audit store would); returns what takes it away."""
    with engine.begin() as conn:
        if is_postgres(engine):
            conn.execute(text(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN RAISE EXCEPTION '{message}'; END $$"))
            conn.execute(text(f"CREATE TRIGGER {name} BEFORE INSERT ON audit_log "
                              f"FOR EACH ROW EXECUTE FUNCTION {name}()"))
        else:
            conn.execute(text(f"CREATE TRIGGER {name} BEFORE INSERT ON audit_log "
                              f"BEGIN SELECT RAISE(ABORT, '{message}'); END"))

    def undo() -> None:
        with engine.begin() as conn:
            if is_postgres(engine):
                conn.execute(text(f"DROP TRIGGER {name} ON audit_log"))
                conn.execute(text(f"DROP FUNCTION {name}()"))
            else:
                conn.execute(text(f"DROP TRIGGER {name}"))

    return undo


@contextlib.contextmanager
def key_stores(url: str, provider: KeyProvider) -> Iterator[Callable[..., KeyStore]]:
    """A factory of KeyStores on the key database at ``url``, each with its own engine
    and cache (as separate processes have); the engines are disposed at the end."""
    engines: list[Engine] = []

    def make(**kwargs: Any) -> KeyStore:
        engine = make_engine(url)
        engines.append(engine)
        ks = KeyStore(engine, provider, **kwargs)
        ks.create_schema()
        return ks

    try:
        yield make
    finally:
        for engine in engines:
            engine.dispose()


def on_select(engine: Engine, record: Callable[[str], None]) -> None:
    """Call ``record`` with every SELECT statement sent through ``engine``."""

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            record(statement)

    event.listen(engine, "before_cursor_execute", seen)


def start_paused_in_unwrap(provider: PausingProvider, target: Callable[[], object],
                           who: str) -> tuple[threading.Thread, threading.Event]:
    """Start ``target`` in a thread and wait until it is paused inside ``unwrap``.

    Returns the thread and the event that lets it go on; fails the test (not an
    AssertionError: no xfail) if the thread never gets there.
    """
    in_unwrap, resume = threading.Event(), threading.Event()

    def pause() -> None:
        in_unwrap.set()
        resume.wait(5)

    provider.on_unwrap = pause
    thread = threading.Thread(target=target)
    thread.start()
    if not in_unwrap.wait(5):
        pytest.fail(f"the {who} never reached unwrap")
    return thread, resume


def stepped_up(actor: Actor, at: dt.datetime | None = None, method: str = "totp") -> Actor:
    """``actor`` with a second factor proved ``at`` (default now): what the
    gateway and the CLI pass after a verified TOTP code (step-up)."""
    when = at or dt.datetime.now(dt.UTC)
    return dataclasses.replace(actor, second_factor=SecondFactor(method, when))
