"""Matrix row "Fail-closed" (issue 15): when the audit store refuses writes, the key
store cannot be reached, the policy store cannot be read or the disk is full,
every data operation is refused and none returns data.

Each fault is made for real where that is possible: a trigger refuses INSERT on
``audit_log``; SQLite's ``keys.db`` becomes a folder (PostgreSQL: the key store's
connections are refused at the driver, as an unreachable host would be);
``casbin_rule`` is renamed away; on SQLite the vault lives on a 16 MiB tmpfs that is
then filled up, on PostgreSQL every write statement fails with SQLSTATE 53100
(disk_full), as on a full disk. The vault has served every operation just
before (warm caches: a data key in memory must not outlive its store), and is
checked after the fault is taken away: nothing changed, no data access was
recorded as allowed during the fault, the chains verify.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy import event, text

from vault import Vault, VaultError, VaultSettings
from vault.store.engine import is_postgres

from ..conftest import POLICIES
from ..helpers import refuse_audit_inserts
from .matrix import CRM, PURPOSE, email_of, person

CANARY = "Canary Zyxwvut"
WINDOW = 0.2  # destroyed_check_seconds of these vaults (default 5)


@dataclass
class Populated:
    ids: list[str]
    last_seq: int = 0
    done: set[str] = field(default_factory=set)  # keyless operations that completed


def _populate(v: Vault) -> Populated:
    v.roles.assign("crm", "crm_service", tenant="acme")
    ids = v.put_many(CRM, "customers", [person(1, n) | {"full_name": f"{CANARY} {n}"}
                                        for n in range(4)], purpose=PURPOSE)
    return Populated(ids)


def _operations(p: Populated) -> dict[str, Callable[[Vault], Any]]:
    """Every data operation of the records API, each on data the vault just served."""
    return {
        "put": lambda v: v.put(CRM, "customers", person(2, 0), purpose=PURPOSE),
        "put_many": lambda v: v.put_many(CRM, "customers", [person(2, 1), person(2, 2)],
                                         purpose=PURPOSE),
        "get": lambda v: v.get(CRM, "customers", p.ids[0], purpose=PURPOSE),
        "get_many": lambda v: v.get_many(CRM, "customers", p.ids, purpose=PURPOSE),
        "find": lambda v: v.find(CRM, "customers", purpose=PURPOSE, email=email_of(1, 1)),
        "find_miss": lambda v: v.find(CRM, "customers", purpose=PURPOSE,
                                      email="nobody@example.com"),
        "update": lambda v: v.update(CRM, "customers", p.ids[2], {"country": "FR"},
                                     purpose=PURPOSE),
        "delete": lambda v: v.delete(CRM, "customers", p.ids[3], purpose=PURPOSE),
    }


def _warm(v: Vault, p: Populated) -> None:
    """Every read once, so that the policy, decision and data-key caches are warm."""
    v.get_many(CRM, "customers", p.ids, purpose=PURPOSE)
    v.find(CRM, "customers", purpose=PURPOSE, email=email_of(1, 1))
    with v.engine.connect() as conn:
        p.last_seq = int(conn.execute(text("SELECT MAX(seq) FROM audit_log")).scalar_one())


def _attempt_all(v: Vault, p: Populated, fault: str, *, keyless: frozenset[str] = frozenset()
                 ) -> str:
    """Run every operation under the fault; the summary. Each must raise a
    VaultError whose message holds no field value, except those in ``keyless``
    (operations that need nothing from the faulty store), which may complete
    returning nothing (``_unchanged`` then checks that each was audited)."""
    outcomes: dict[str, str] = {}
    leaks: list[str] = []
    for name, op in _operations(p).items():
        try:
            result = op(v)
        except VaultError as exc:
            outcomes[name] = type(exc).__name__
            if CANARY in f"{exc!s}{exc!r}":
                leaks.append(name)
        except Exception as exc:  # refused, but not as a VaultError
            outcomes[name] = f"untyped {type(exc).__name__}"
        else:
            outcomes[name] = f"RETURNED {type(result).__name__}"
    for name in keyless:
        if outcomes[name] == "RETURNED NoneType":
            outcomes[name] = "done, needs no key, audited"
            p.done.add(name)
    refused = sum(not o.startswith(("RETURNED", "untyped", "done")) for o in outcomes.values())
    summary = (f"{fault}: {refused}/{len(outcomes)} data operations refused, "
               f"{len(p.done)} completed without the faulty store and returned nothing "
               f"({', '.join(f'{k}={o}' for k, o in outcomes.items())})")
    print(summary)
    assert refused + len(p.done) == len(outcomes), summary
    assert not leaks, f"{summary}; a field value in the error of {leaks}"
    return summary


def _unchanged(v: Vault, p: Populated, summary: str) -> None:
    """After the fault: the records as they were, no data access recorded as allowed
    during the fault, every chain verified."""
    kept = [rid for rid in p.ids if not (rid == p.ids[3] and "delete" in p.done)]
    with v.engine.connect() as conn:
        ids = set(conn.execute(text("SELECT id FROM records")).scalars())
        allowed = [tuple(r) for r in conn.execute(text(
            "SELECT action, record_ids FROM audit_log WHERE seq > :s AND decision = 'allow' "
            "AND collection = 'customers'"), {"s": p.last_seq})]
    assert ids == set(kept), f"{summary}; records changed: {len(ids)} instead of {len(kept)}"
    done = [("delete", f'["{p.ids[3]}"]')] if "delete" in p.done else []
    assert allowed == done, f"{summary}; data accesses audited as allowed: {allowed}"
    records = v.get_many(CRM, "customers", kept, purpose=PURPOSE)
    assert [r.data["country"] for r in records] == ["DE"] * len(kept), summary
    report = v.audit_log.verify()
    assert report.ok, f"{summary}; {report}"


# ---------------------------------------------------------------- faults


def _refuse_audit_writes(v: Vault) -> Callable[[], None]:
    return refuse_audit_inserts(v.engine, "vault_test_refuse", "audit store refuses writes")


def _past_the_key_window(v: Vault) -> None:
    """Wait out ``destroyed_check_seconds``: within it a process serves data keys it
    holds in memory without asking the key store (the documented erasure window),
    so an outage shorter than it is not seen; the tests use a short window."""
    time.sleep(v.settings.destroyed_check_seconds + 0.05)


def _cut_key_store(v: Vault) -> Callable[[], None]:
    engine = v.keystore.engine
    if is_postgres(engine):
        import psycopg

        def refuse(*_: Any) -> None:
            raise psycopg.OperationalError("connection refused (test: key store unreachable)")

        engine.dispose()
        event.listen(engine, "do_connect", refuse)
        _past_the_key_window(v)

        def undo_pg() -> None:
            event.remove(engine, "do_connect", refuse)

        return undo_pg
    path = Path(str(engine.url.database))
    engine.dispose()
    moved = [(f, f.with_name(f.name + ".away")) for f in
             (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
             if f.exists()]
    for f, away in moved:
        f.rename(away)
    path.mkdir()  # "unable to open database file"
    _past_the_key_window(v)

    def undo_sqlite() -> None:
        engine.dispose()
        path.rmdir()
        for f, away in moved:
            away.rename(f)

    return undo_sqlite


# The policy store: its rules and the version the engine polls.
POLICY_TABLES = ("casbin_rule", "policy_state")


def _hide_policy(v: Vault) -> Callable[[], None]:
    with v.engine.begin() as conn:
        for table in POLICY_TABLES:
            conn.execute(text(f"ALTER TABLE {table} RENAME TO {table}_unreadable"))
    time.sleep(4 * v.settings.policy_refresh_seconds)  # past the refresh interval

    def undo() -> None:
        with v.engine.begin() as conn:
            for table in POLICY_TABLES:
                conn.execute(text(f"ALTER TABLE {table}_unreadable RENAME TO {table}"))
        time.sleep(4 * v.settings.policy_refresh_seconds)

    return undo


FAULTS = {
    "audit store refusing writes": _refuse_audit_writes,
    "key store unreachable": _cut_key_store,
    "policy store unreadable": _hide_policy,
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_data_operation_is_refused(settings: VaultSettings, fault: str) -> None:
    settings = settings.model_copy(update={"destroyed_check_seconds": WINDOW})
    with Vault.init(settings=settings) as v:
        p = _populate(v)
        _warm(v, p)
        undo = FAULTS[fault](v)
        try:
            summary = _attempt_all(v, p, f"{v.engine.dialect.name}, {fault}")
        finally:
            undo()
        _unchanged(v, p, summary)


# ---------------------------------------------------------------- disk full


def _disk_full_refused(reason: str) -> NoReturn:
    if os.environ.get("VAULT_REQUIRE_DISKFULL") == "1":
        pytest.fail(f"{reason}; VAULT_REQUIRE_DISKFULL=1 demands the disk-full test")
    pytest.skip(reason)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (root only); skipped with the reason where it cannot be mounted."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs",
                               str(mount)], capture_output=True, text=True, check=False)
    except OSError as exc:  # no mount(8) here
        _disk_full_refused(f"cannot run mount: {type(exc).__name__}")
    if done.returncode != 0:
        _disk_full_refused(f"cannot mount a size-limited tmpfs: {done.stderr.strip()[:200]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def _fill(folder: Path) -> int:
    """Write a file until the file system is full; its size."""
    size = 0
    chunk = b"\0" * 65536
    with (folder / "filler").open("wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                size += f.write(chunk)
        with contextlib.suppress(OSError):
            while True:  # the last partial blocks
                size += f.write(b"\0" * 512)
    return size


def test_a_full_disk_refuses_every_data_operation_on_sqlite(small_disk: Path) -> None:
    settings = VaultSettings.build(home=small_disk / "vault", policies=POLICIES,
                                   policy_refresh_seconds=0.05,
                                   destroyed_check_seconds=WINDOW)
    with Vault.init(settings=settings) as v:
        p = _populate(v)
        _warm(v, p)
        for engine in (v.engine, v.keystore.engine):  # empty WALs: every write must grow one
            with engine.connect().execution_options(sqlite_begin="none") as conn:
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
            assert not busy
        filled = _fill(small_disk)
        try:
            summary = _attempt_all(v, p, f"sqlite, disk full ({filled // 1024} KiB filler)")
        finally:
            (small_disk / "filler").unlink()
        _unchanged(v, p, summary)


@pytest.mark.postgres
def test_a_full_disk_refuses_every_data_operation_on_postgres(pg_schemas: Any,
                                                              tmp_path: Path) -> None:
    """Every INSERT, UPDATE and DELETE in both databases fails with 53100 (disk_full)."""
    settings = VaultSettings.build(
        home=tmp_path / "vault", policies=POLICIES, policy_refresh_seconds=0.05,
        destroyed_check_seconds=WINDOW, database_url=pg_schemas.url(pg_schemas.names[0]),
        keystore_url=pg_schemas.url(pg_schemas.names[1]))
    with Vault.init(settings=settings) as v:
        p = _populate(v)
        _warm(v, p)
        tables: list[tuple[str, str]] = []
        for engine in (v.engine, v.keystore.engine):
            with engine.begin() as conn:
                conn.execute(text(
                    "CREATE FUNCTION vault_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
                    "USING ERRCODE = 'disk_full'; END $$"))
                schema = conn.execute(text("SELECT current_schema()")).scalar_one()
                for (table,) in conn.execute(text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")):
                    conn.execute(text(
                        f'CREATE TRIGGER vault_test_disk_full BEFORE INSERT OR UPDATE OR DELETE '
                        f'ON "{table}" FOR EACH STATEMENT '
                        f'EXECUTE FUNCTION vault_test_disk_full()'))
                    tables.append((schema, table))
        try:
            summary = _attempt_all(v, p, f"postgresql, disk full (53100 on {len(tables)} "
                                         "tables)")
        finally:
            for engine in (v.engine, v.keystore.engine):
                with engine.begin() as conn:
                    conn.execute(text("DROP FUNCTION vault_test_disk_full() CASCADE"))
        _unchanged(v, p, summary)
