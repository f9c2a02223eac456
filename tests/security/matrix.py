"""Helpers of the reliability matrix (issue 15): vault settings that a child process
can rebuild, the concurrency workers (imported by ``spawn`` children, so they live
in a module, not in a test file), and the checks the concurrency tests share."""

from __future__ import annotations

import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from vault import Actor, Vault, VaultSettings, correlation_id
from vault.store.engine import is_postgres

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
CRM = Actor("crm", "acme")
PURPOSE = "account_management"
SHARED = "shared-subject"


def settings_of(home: str, database_url: str | None, keystore_url: str | None,
                **extra: Any) -> VaultSettings:
    """The settings of the conftest fixtures (another configuration would be
    audited as a ``config.change`` when a child opens the vault)."""
    urls = {"database_url": database_url, "keystore_url": keystore_url} if database_url else {}
    return VaultSettings.build(home=Path(home), policies=POLICIES, policy_refresh_seconds=0.05,
                               **urls, **extra)


def child_env(settings: VaultSettings) -> dict[str, str]:
    """The environment of a child process that opens ``settings`` with
    ``VaultSettings.from_env()`` and imports this checkout's ``vault``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(VAULT_HOME=str(settings.home), VAULT_POLICIES=str(POLICIES),
               VAULT_POLICY_REFRESH_SECONDS="0.05", PYTHONPATH=str(REPO))
    if settings.database_url:
        env["VAULT_DATABASE_URL"] = settings.database_url
    if settings.keystore_url:
        env["VAULT_KEYSTORE_URL"] = settings.keystore_url
    return env


def email_of(worker: int, n: int) -> str:
    return f"w{worker}n{n}@example.com"


def person(worker: int, n: int) -> dict[str, Any]:
    return {"full_name": f"Writer {worker} record {n}", "email": email_of(worker, n),
            "country": "DE", "device_info": {"w": worker, "n": n}}


@dataclass
class WorkerResult:
    """What one writer did: ``written`` maps record id -> (worker, n); ``request_ids``
    the correlation id of every audited call -> the audit entries it must have (a
    put or get: one; a search: one naming the fields searched, plus one per chain
    of the records it returned)."""

    worker: int
    written: dict[str, tuple[int, int]] = field(default_factory=dict)
    request_ids: dict[str, int] = field(default_factory=dict)
    reads: int = 0
    searches: int = 0
    misses: int = 0
    errors: list[str] = field(default_factory=list)


def work(vault: Vault, worker: int, writes: int, *, read_every: int, search_every: int,
         check: bool = True) -> WorkerResult:
    """``writes`` audited puts (every fifth for a subject all writers share), a get of
    an earlier record every ``read_every`` writes, a search by e-mail every
    ``search_every`` and a search that misses every ``5 * search_every``; each call in
    its own correlation id. ``check``: the reads and searches must return what was
    written (off for the control run, whose only point is the forks)."""
    out = WorkerResult(worker)
    rng = random.Random(worker)
    mine: list[tuple[str, int]] = []
    for n in range(writes):
        tag = f"w{worker}.{n}"
        with correlation_id(f"{tag}.put") as rid_tag:
            rid = vault.put(CRM, "customers", person(worker, n), purpose=PURPOSE,
                            subject_id=SHARED if n % 5 == 0 else None)
        out.request_ids[rid_tag] = 1
        out.written[rid] = (worker, n)
        mine.append((rid, n))
        if read_every and n % read_every == read_every - 1:
            old_rid, old_n = rng.choice(mine)
            with correlation_id(f"{tag}.get") as rid_tag:
                got = vault.get(CRM, "customers", old_rid, purpose=PURPOSE)
            out.request_ids[rid_tag] = 1
            out.reads += 1
            if check and got.data.get("email") != email_of(worker, old_n):
                out.errors.append(f"get {old_rid}: wrong record")
        if search_every and n % search_every == search_every - 1:
            old_rid, old_n = rng.choice(mine)
            with correlation_id(f"{tag}.find") as rid_tag:
                hits = vault.find(CRM, "customers", purpose=PURPOSE,
                                  email=email_of(worker, old_n))
            out.request_ids[rid_tag] = 1 + len(hits)
            out.searches += 1
            if check and [h.id for h in hits] != [old_rid]:
                out.errors.append(f"find {old_rid}: {len(hits)} hits")
        if search_every and n % (5 * search_every) == 2:
            with correlation_id(f"{tag}.miss") as rid_tag:
                hits = vault.find(CRM, "customers", purpose=PURPOSE,
                                  email=f"nobody.{worker}.{n}@example.com")
            out.request_ids[rid_tag] = 1
            out.misses += 1
            if check and hits:
                out.errors.append("a search for nobody found someone")
    return out


def _wait_until(start_at: float) -> None:
    """All writers start together, however long each took to spawn and open."""
    time.sleep(max(0.0, start_at - time.time()))


def sqlite_worker(home: str, worker: int, writes: int, read_every: int, search_every: int,
                  lock: bool, start_at: float) -> WorkerResult:
    """One writing process on a SQLite vault (``lock`` False: the control run)."""
    import vault.audit.log

    vault.audit.log.CHAIN_LOCK = lock
    with Vault.open(settings=settings_of(home, None, None)) as v:
        _wait_until(start_at)
        return work(v, worker, writes, read_every=read_every, search_every=search_every,
                    check=lock)


def pg_worker(home: str, database_url: str, keystore_url: str, first: int, threads: int,
              writes: int, read_every: int, search_every: int, lock: bool,
              start_at: float) -> list[WorkerResult]:
    """One process holding ``threads`` connections to a PostgreSQL vault, each its own
    ``Vault`` (engine and pool) in its own thread, started together."""
    import vault.audit.log

    vault.audit.log.CHAIN_LOCK = lock
    settings = settings_of(home, database_url, keystore_url)
    barrier = threading.Barrier(threads)
    results: list[WorkerResult] = []

    def run(worker: int) -> None:
        try:
            with Vault.open(settings=settings) as v:
                barrier.wait(timeout=120)
                _wait_until(start_at)
                results.append(work(v, worker, writes, read_every=read_every,
                                    search_every=search_every, check=lock))
        except BaseException as exc:  # reported by the test
            failed = WorkerResult(worker)
            failed.errors.append(f"{type(exc).__name__}: {exc}")
            results.append(failed)

    pool = [threading.Thread(target=run, args=(first + t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return results


@dataclass
class ChainFigures:
    entries: int
    chains: int
    forked_positions: int  # (chain, chain_seq) pairs held by more than one entry
    forked_parents: int  # (chain, prev_hash) pairs held by more than one entry
    gaps: int  # chains whose positions are not 1..n


def chain_figures(engine: Engine) -> ChainFigures:
    with engine.connect() as conn:
        entries = conn.execute(text("SELECT COUNT(*) FROM audit_log")).scalar_one()
        positions = conn.execute(text(
            "SELECT COUNT(*) FROM (SELECT chain, chain_seq FROM audit_log "
            "GROUP BY chain, chain_seq HAVING COUNT(*) > 1) f")).scalar_one()
        parents = conn.execute(text(
            "SELECT COUNT(*) FROM (SELECT chain, prev_hash FROM audit_log "
            "GROUP BY chain, prev_hash HAVING COUNT(*) > 1) f")).scalar_one()
        stats = conn.execute(text(
            "SELECT chain, COUNT(DISTINCT chain_seq), MIN(chain_seq), MAX(chain_seq) "
            "FROM audit_log GROUP BY chain")).all()
    gaps = sum(1 for _c, n, lo, hi in stats if (lo, hi) != (1, n))
    return ChainFigures(int(entries), len(stats), int(positions), int(parents), gaps)


def entries_per_request(engine: Engine, prefix: str = "w") -> dict[str, int]:
    with engine.connect() as conn:
        return {str(r): int(n) for r, n in conn.execute(text(
            "SELECT request_id, COUNT(*) FROM audit_log WHERE request_id LIKE :p "
            "GROUP BY request_id"), {"p": f"{prefix}%"})}


def drop_fork_backstops(engine: Engine) -> None:
    """Take away the unique constraints on (chain, chain_seq) and (chain, prev_hash),
    which would refuse a forked entry: the control run must let forks through to
    show that the test sees them. SQLite cannot drop a table constraint, so the
    table is rebuilt without them (its triggers and index recreated)."""
    with engine.begin() as conn:
        if is_postgres(engine):
            conn.execute(text("ALTER TABLE audit_log DROP CONSTRAINT uq_audit_log_chain_chain_seq"))
            conn.execute(text("ALTER TABLE audit_log DROP CONSTRAINT uq_audit_log_chain_prev_hash"))
            return
        rows = conn.execute(text("SELECT type, name, sql FROM sqlite_master "
                                 "WHERE tbl_name = 'audit_log' AND sql IS NOT NULL")).all()
        table = next(sql for kind, _n, sql in rows if kind == "table")
        rebuilt, dropped = re.subn(r",\s*CONSTRAINT uq_audit_log_\w+ UNIQUE \([^)]*\)", "", table)
        assert dropped == 2, table
        conn.execute(text(rebuilt.replace("CREATE TABLE audit_log", "CREATE TABLE audit_new", 1)))
        conn.execute(text("INSERT INTO audit_new SELECT * FROM audit_log"))
        conn.execute(text("DROP TABLE audit_log"))
        conn.execute(text("ALTER TABLE audit_new RENAME TO audit_log"))
        for kind, _name, sql in rows:
            if kind != "table":
                conn.execute(text(sql))
