"""Concurrent writers never fork or lose audit entries: processes on SQLite, connections on PG."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from vault import AccessDenied, Actor, AuditError, Vault, VaultSettings
from vault.audit.chain import AuditEvent, Decision
from vault.store.models import AuditEntryRow, RecordRow

from ..conftest import POLICIES, ROLE_USERS
from .test_data_path import customer

CRM = Actor("crm", "acme")
PURPOSE = "account_management"
OPS_PER_WORKER = 15


def _work(vault: Vault, worker: int, shared_subject: str) -> int:
    """put + get per iteration; every third write goes to a subject all workers share."""
    done = 0
    for n in range(OPS_PER_WORKER):
        subject = shared_subject if n % 3 == 0 else None
        rid = vault.put(CRM, "customers", customer(worker * 1000 + n), purpose=PURPOSE,
                        subject_id=subject)
        vault.get(CRM, "customers", rid, purpose=PURPOSE)
        done += 2
    return done


def _process_worker(home: str, worker: int, shared_subject: str) -> int:
    # The fixture's configuration: another one would be audited as a config.change.
    settings = VaultSettings.build(home=Path(home), policies=POLICIES, policy_refresh_seconds=0.05)
    with Vault.open(settings=settings) as vault:
        return _work(vault, worker, shared_subject)


def _chain_stats(vault: Vault) -> list[tuple[int, int, int, int]]:
    entries = AuditEntryRow.__table__
    with vault.engine.connect() as conn:
        return [
            (int(c), int(n), int(lo), int(hi))
            for c, n, lo, hi in conn.execute(
                select(entries.c.chain, func.count(), func.min(entries.c.chain_seq),
                       func.max(entries.c.chain_seq)).group_by(entries.c.chain)
            )
        ]


def _assert_consistent(vault: Vault, before: int, added: int, records: int) -> None:
    report = vault.audit_log.verify()
    assert report.ok, report
    assert vault.audit_log.count() == before + added  # nothing lost, nothing duplicated
    for chain, count, lowest, highest in _chain_stats(vault):
        # contiguous 1..n in every chain: no gap, no fork (a fork would repeat a position)
        assert (lowest, highest) == (1, count), f"chain {chain} is not contiguous"
    with vault.engine.connect() as conn:
        heads = vault.audit_log.heads(conn)
        assert sum(h.length for h in heads.values()) == before + added
        assert conn.execute(select(func.count()).select_from(RecordRow)).scalar_one() == records


@pytest.mark.slow
def test_processes_append_concurrently_on_sqlite(sqlite_settings: VaultSettings) -> None:
    """Four processes write and read at once; every chain verifies, no entry lost."""
    with Vault.init(settings=sqlite_settings) as vault:
        vault.roles.assign("crm", "crm_service", tenant="acme")
        vault.put(CRM, "customers", customer(0), purpose=PURPOSE, subject_id="shared-subject")
        before = vault.audit_log.count()
    ctx = multiprocessing.get_context("spawn")
    workers = 4
    with ctx.Pool(workers) as pool:
        results = pool.starmap(
            _process_worker,
            [(str(sqlite_settings.home), w, "shared-subject") for w in range(1, workers + 1)],
        )
    assert results == [2 * OPS_PER_WORKER] * workers
    with Vault.open(settings=sqlite_settings) as vault:
        _assert_consistent(vault, before, sum(results), 1 + workers * OPS_PER_WORKER)


@pytest.mark.postgres
def test_connections_append_concurrently_on_postgres(pg_schemas: Any, tmp_path: Path) -> None:
    """Eight threads, each with its own engine and pool, write and read at once."""
    settings = VaultSettings.build(
        home=tmp_path / "vault", policies=POLICIES,
        database_url=pg_schemas.url(pg_schemas.names[0]),
        keystore_url=pg_schemas.url(pg_schemas.names[1]),
        audit_chains=4,  # few chains, so writers really contend for the same heads
    )
    with Vault.init(settings=settings) as vault:
        for user, role in ROLE_USERS.items():
            vault.roles.assign(user, role, tenant="acme")
        vault.put(CRM, "customers", customer(0), purpose=PURPOSE, subject_id="shared-subject")
        before = vault.audit_log.count()
    workers = 8
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(workers)

    def run(worker: int) -> None:
        try:
            with Vault.open(settings=settings) as vault:
                barrier.wait()
                results.append(_work(vault, worker, "shared-subject"))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(1, workers + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert results == [2 * OPS_PER_WORKER] * workers
    with Vault.open(settings=settings) as vault:
        _assert_consistent(vault, before, sum(results), 1 + workers * OPS_PER_WORKER)


def test_audit_insert_failing_at_the_driver_refuses_everything(vault: Vault) -> None:
    """A connection that fails exactly when the audit entry is inserted: no data, no change."""
    ids = vault.put_many(CRM, "customers", [customer(n) for n in range(3)], purpose=PURPOSE)
    before = vault.audit_log.count()

    def fail_audit(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_LOG"):
            raise ConnectionError("audit connection lost")

    event.listen(vault.engine, "before_cursor_execute", fail_audit)
    try:
        outcomes = []
        for call in (
            lambda: vault.get(CRM, "customers", ids[0], purpose=PURPOSE),
            lambda: vault.get_many(CRM, "customers", ids, purpose=PURPOSE),
            lambda: vault.find(CRM, "customers", purpose=PURPOSE, email="li.wei1@example.cn"),
            lambda: vault.put(CRM, "customers", customer(9), purpose=PURPOSE),
            lambda: vault.update(CRM, "customers", ids[1], {"country": "DE"}, purpose=PURPOSE),
            lambda: vault.delete(CRM, "customers", ids[2], purpose=PURPOSE),
        ):
            try:
                outcomes.append(call())
            except (AuditError, ConnectionError) as exc:
                outcomes.append(type(exc))
        assert all(o in (AuditError, ConnectionError) for o in outcomes), outcomes
    finally:
        event.remove(vault.engine, "before_cursor_execute", fail_audit)
    assert vault.audit_log.count() == before
    with vault.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM records")).scalar_one() == 3
    assert vault.get(CRM, "customers", ids[1], purpose=PURPOSE).data["country"] == "CN"


def test_remembered_heads_survive_other_writers_and_rollbacks(vault: Vault,
                                                              settings: VaultSettings) -> None:
    """Each audit log remembers the heads it last wrote and moves them conditionally:
    another vault writing in between, and an append rolled back with its transaction,
    must leave every chain whole and every entry counted once."""
    rid = vault.put(CRM, "customers", customer(1), purpose=PURPOSE)
    subject = vault.get(CRM, "customers", rid, purpose=PURPOSE).subject_id
    start = vault.audit_log.count()
    with Vault.open(settings=settings) as other:
        for _ in range(3):
            other.get(CRM, "customers", rid, purpose=PURPOSE)
            vault.get(CRM, "customers", rid, purpose=PURPOSE)
    assert vault.audit_log.count() == start + 6
    with vault.engine.connect() as conn, conn.begin() as tx:
        vault.audit_log.append(conn, [AuditEvent(
            tenant="acme", actor="crm", action="read", decision=Decision.ALLOW,
            collection="customers", record_ids=(rid,),
            subjects=(vault.pseudonym("acme", subject),), fields=("email",), purpose=PURPOSE)])
        tx.rollback()
    vault.get(CRM, "customers", rid, purpose=PURPOSE)
    assert vault.audit_log.count() == start + 7
    report = vault.audit_log.verify()
    assert report.ok, report


def _lost_race(vault: Vault, kind: str) -> BaseException:
    """The error a driver raises when an audit append loses a race, as on this backend."""
    if vault.engine.dialect.name == "postgresql":
        import psycopg.errors

        return {"deadlock": psycopg.errors.DeadlockDetected("deadlock detected"),
                "serialization": psycopg.errors.SerializationFailure("could not serialize"),
                }[kind]
    import sqlite3

    return {"deadlock": sqlite3.OperationalError("database is locked"),
            "serialization": sqlite3.OperationalError("database is locked"),
            "backstop": sqlite3.IntegrityError(
                "UNIQUE constraint failed: audit_log.chain, audit_log.prev_hash"),
            }[kind]


@pytest.mark.parametrize("kind", ["deadlock", "serialization", "backstop"])
def test_audit_append_that_loses_a_race_is_retried(vault: Vault, kind: str) -> None:
    """A deadlock, serialisation failure, busy database or (chain, prev_hash) backstop
    hit while appending the audit entry rolls the transaction back and runs it again
    (bounded): the call succeeds, each entry is written once, every chain verifies.
    Without the retry each of these calls failed with AuditError."""
    if kind == "backstop" and vault.engine.dialect.name == "postgresql":
        pytest.skip("a unique_violation's constraint name comes from the server only")
    rid = vault.put(CRM, "customers", customer(1), purpose=PURPOSE)
    failures: list[str] = []

    def fail_once(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_LOG") and not failures:
            failures.append(statement)
            raise _lost_race(vault, kind)

    calls = {
        "put": lambda: vault.put(CRM, "customers", customer(2), purpose=PURPOSE),
        "get": lambda: vault.get(CRM, "customers", rid, purpose=PURPOSE),
        "update": lambda: vault.update(CRM, "customers", rid, {"country": "DE"},
                                       purpose=PURPOSE),
        "roles.assign": lambda: vault.roles.assign("zoe", "sales_rep", tenant="acme"),
        "denial": lambda: vault.get(Actor("mallory", "acme"), "customers", rid,
                                    purpose=PURPOSE),
    }
    event.listen(vault.engine, "before_cursor_execute", fail_once)
    try:
        for name, call in calls.items():
            failures.clear()
            before = vault.audit_log.count()
            try:
                call()
            except AccessDenied:
                assert name == "denial"
            assert failures, f"{name}: no audit insert was made to fail"
            assert vault.audit_log.count() == before + 1, name
    finally:
        event.remove(vault.engine, "before_cursor_execute", fail_once)
    assert vault.get(CRM, "customers", rid, purpose=PURPOSE).data["country"] == "DE"
    report = vault.audit_log.verify()
    assert report.ok, report


def test_audit_append_that_keeps_losing_fails_closed(vault: Vault) -> None:
    """The retry is bounded: a race lost every time ends in AuditError, nothing written."""
    rid = vault.put(CRM, "customers", customer(1), purpose=PURPOSE)
    before = vault.audit_log.count()
    attempts: list[int] = []

    def always(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_LOG"):
            attempts.append(1)
            raise _lost_race(vault, "deadlock")

    event.listen(vault.engine, "before_cursor_execute", always)
    try:
        with pytest.raises(AuditError):
            vault.get(CRM, "customers", rid, purpose=PURPOSE)
        with pytest.raises(AuditError):
            vault.put(CRM, "customers", customer(2), purpose=PURPOSE)
    finally:
        event.remove(vault.engine, "before_cursor_execute", always)
    assert len(attempts) == 2 * 5  # transaction_attempts() default bound, per call
    assert vault.audit_log.count() == before


def test_every_entry_carries_a_correlation_id(vault: Vault) -> None:
    """Entries written inside ``correlation_id(...)`` carry that id (data access,
    denials and administrative events alike); every other entry gets one of its own."""
    from vault import correlation_id

    with correlation_id("req-42") as rid_tag:
        assert rid_tag == "req-42"
        rid = vault.put(CRM, "customers", customer(1), purpose=PURPOSE)
        vault.get(CRM, "customers", rid, purpose=PURPOSE)
        with pytest.raises(AccessDenied):
            vault.get(Actor("mallory", "acme"), "customers", rid, purpose=PURPOSE)
        vault.roles.assign("zoe", "sales_rep", tenant="acme")
    vault.get(CRM, "customers", rid, purpose=PURPOSE)
    with vault.engine.connect() as conn:
        tagged = conn.execute(text("SELECT action, decision FROM audit_log "
                                   "WHERE request_id = 'req-42' ORDER BY seq")).all()
        untagged = conn.execute(text("SELECT COUNT(*) FROM audit_log WHERE request_id IS NULL "
                                     "OR request_id = ''")).scalar_one()
        last = conn.execute(text("SELECT request_id FROM audit_log ORDER BY seq DESC LIMIT 1"
                                 )).scalar_one()
    assert [tuple(r) for r in tagged] == [("write", "allow"), ("read", "allow"),
                                          ("read", "deny"), ("roles.assign", "allow")]
    assert untagged == 0 and last != "req-42" and len(last) == 32
