"""An erasure made by another process is honoured within seconds (issue 15, weakness 15).

"Erased" has one definition: the subject's tombstone in the key store
(:meth:`KeyStore.is_destroyed`). A process caches unwrapped data keys; it
looks at the key store's destruction counter at most every
``destroyed_check_seconds`` (default 5 s) and then drops the cached keys of
subjects that have a tombstone. Within that window a cached key may still be
served (no key-store query on each read); after it, reads and writes of the
erased subject raise KeyDestroyed. Two processes are simulated by two
``Vault`` objects opened on the same folder (and once by a real subprocess).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from vault import FixedClock, KeyDestroyed, Vault, VaultSettings
from vault.store.models import BlindIndexRow, RecordRow

from ..conftest import REPO, ROLE_USERS
from .test_data_path import CRM, customer

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class StatementCounter:
    """Counts every statement sent through an engine."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        self.count += 1


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def pair(settings: VaultSettings, clock: FixedClock) -> Iterator[tuple[Vault, Vault]]:
    """Two vaults on the same databases (two processes), on one fixed clock."""
    a = Vault.init(settings=settings, clock=clock)
    for user, role in ROLE_USERS.items():
        a.roles.assign(user, role, tenant="acme")
    b = Vault.open(settings=settings, clock=clock)
    try:
        yield a, b
        assert a.audit_log.verify().ok
    finally:
        b.close()
        a.close()


def tokens_of(v: Vault, subject: str) -> int:
    records = select(RecordRow.__table__.c.id).where(RecordRow.__table__.c.subject_id == subject)
    with v.engine.connect() as conn:
        return len(conn.execute(select(BlindIndexRow.__table__).where(
            BlindIndexRow.__table__.c.record_id.in_(records))).all())


def assert_writes_refused(v: Vault, rid: str, subject: str, n: int,
                          change: dict[str, str]) -> None:
    """A new record (``customer(n)``) for the erased subject and ``change`` to its
    record ``rid`` raise KeyDestroyed, and no blind-index token of it is left."""
    with pytest.raises(KeyDestroyed):
        v.put(CRM, "customers", customer(n), purpose="account_management", subject_id=subject)
    with pytest.raises(KeyDestroyed):
        v.update(CRM, "customers", rid, change, purpose="account_management")
    assert tokens_of(v, subject) == 0


def test_an_erasure_by_another_vault_is_seen_within_five_seconds(
        pair: tuple[Vault, Vault], clock: FixedClock) -> None:
    """A does not ask the key store again for less than 5 s after B shredded the
    subject, yet already refuses its reads: the erasure marker B wrote in the data
    database comes with the rows (weakness 14). From 5 s on, A's cache has dropped
    the key too; reads, updates and writes of the subject raise KeyDestroyed and no
    blind-index token of it comes back."""
    a, b = pair
    rid = a.put(CRM, "customers", customer(1), purpose="account_management")
    subject = a.get(CRM, "customers", rid, purpose="account_management").subject_id
    b.keys.destroy(subject, tenant="acme")
    assert a.keystore.is_destroyed("acme", subject)  # the one definition of "erased"
    assert tokens_of(a, subject) == 0

    queries = StatementCounter(a.keystore.engine)
    clock.advance(dt.timedelta(seconds=4.9))
    with pytest.raises(KeyDestroyed):  # within the window: refused by the marker
        a.get(CRM, "customers", rid, purpose="account_management")
    assert queries.count == 0, "a cached read must not query the key store"

    clock.advance(dt.timedelta(seconds=0.1))  # 5 s after the last check
    with pytest.raises(KeyDestroyed):
        a.get(CRM, "customers", rid, purpose="account_management")
    assert_writes_refused(a, rid, subject, 2, {"support_notes": "again"})


def test_subjects_not_erased_stay_cached(pair: tuple[Vault, Vault], clock: FixedClock) -> None:
    """Noticing an erasure drops only the erased subjects' keys from the cache."""
    a, b = pair
    gone = a.put(CRM, "customers", customer(1), purpose="account_management")
    kept = a.put(CRM, "customers", customer(2), purpose="account_management")
    subject = a.get(CRM, "customers", gone, purpose="account_management").subject_id
    kept_subject = a.get(CRM, "customers", kept, purpose="account_management").subject_id
    cached = a.keystore.get_key("acme", kept_subject)
    b.keys.destroy(subject, tenant="acme")
    clock.advance(dt.timedelta(seconds=5))
    with pytest.raises(KeyDestroyed):
        a.get(CRM, "customers", gone, purpose="account_management")
    # The refusal above came from the erasure marker in the data database (no key
    # store look); the next use of the cache notices the destruction.
    a.get(CRM, "customers", kept, purpose="account_management")
    assert a.keystore.get_key("acme", kept_subject) is cached, "dropped from the cache"
    queries = StatementCounter(a.keystore.engine)
    assert a.get(CRM, "customers", kept, purpose="account_management").data["email"] == (
        "li.wei2@example.cn")
    assert queries.count == 0, "the key of a subject not erased should still be cached"


def test_the_window_is_a_setting(sqlite_settings: VaultSettings) -> None:
    """``destroyed_check_seconds`` sets the window; on the real clock, 0.2 s."""
    settings = VaultSettings.build(**{**sqlite_settings.model_dump(exclude_none=True),
                                      "destroyed_check_seconds": 0.2})
    with Vault.init(settings=settings) as a, Vault.open(settings=settings) as b:
        a.roles.assign("crm", "crm_service", tenant="acme")
        rid = a.put(CRM, "customers", customer(1), purpose="account_management")
        subject = a.get(CRM, "customers", rid, purpose="account_management").subject_id
        b.keys.destroy(subject, tenant="acme")
        time.sleep(0.25)
        with pytest.raises(KeyDestroyed):
            a.get(CRM, "customers", rid, purpose="account_management")


_DESTROY = """
import sys
from vault import Vault
with Vault.open(sys.argv[1], policies=sys.argv[2]) as v:
    v.keys.destroy(sys.argv[3], tenant="acme")
"""


def test_an_erasure_by_another_process_is_seen(sqlite_settings: VaultSettings) -> None:
    """A real second process shreds the subject; this one notices within the window."""
    clock = FixedClock(T0)
    with Vault.init(settings=sqlite_settings, clock=clock) as a:
        a.roles.assign("crm", "crm_service", tenant="acme")
        rid = a.put(CRM, "customers", customer(1), purpose="account_management")
        subject = a.get(CRM, "customers", rid, purpose="account_management").subject_id
        done = subprocess.run(
            [sys.executable, "-c", _DESTROY, str(sqlite_settings.home),
             str(sqlite_settings.resolved_policies), subject],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert a.keystore.is_destroyed("acme", subject)
        clock.advance(dt.timedelta(seconds=5))
        with pytest.raises(KeyDestroyed):
            a.get(CRM, "customers", rid, purpose="account_management")


def test_writes_for_an_erased_subject_are_refused_at_once(
        pair: tuple[Vault, Vault], clock: FixedClock) -> None:
    """Inside the read window too, no write re-creates an erased subject's records or
    blind-index tokens: writes ask the key store for the tombstone every time."""
    a, b = pair
    rid = a.put(CRM, "customers", customer(3), purpose="account_management")
    subject = a.get(CRM, "customers", rid, purpose="account_management").subject_id
    b.keys.destroy(subject, tenant="acme")
    assert_writes_refused(a, rid, subject, 4, {"email": "back@example.cn"})
    assert a.subject_records("acme", subject) == [rid]
