"""A sweep killed with SIGKILL mid-run: the next run finishes the job exactly.

A real subprocess runs ``v.retention.sweep`` on the same vault (SQLite and
PostgreSQL) and is killed after a few committed batches, at a random moment
inside or between batches. A second run must then remove everything still
expired, nothing twice and nothing unexpired, and the audit log must verify.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from vault import Actor, FixedClock, Vault, VaultSettings
from vault.retention.tables import RetentionRunRow
from vault.store.models import AuditEntryRow, RecordRow

from ..conftest import POLICIES

EXPIRED = 400
FRESH = 25
BATCH = 25

CHILD = """
import sys, time
from vault import Vault, VaultSettings

with Vault.open(settings=VaultSettings.from_env()) as v:
    def step(done, total):
        print(f"batch {done} {total}", flush=True)
        time.sleep(0.03)
    v.retention.sweep(batch_size=int(sys.argv[1]), progress=step)
print("finished", flush=True)
"""


def _env(settings: VaultSettings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(VAULT_HOME=str(settings.home), VAULT_POLICIES=str(POLICIES))
    if settings.database_url:
        env["VAULT_DATABASE_URL"] = settings.database_url
    if settings.keystore_url:
        env["VAULT_KEYSTORE_URL"] = settings.keystore_url
    return env


def _populate(settings: VaultSettings) -> tuple[set[str], set[str], set[str]]:
    crm = Actor("crm", "acme")
    clock = FixedClock(dt.datetime(2010, 1, 1, tzinfo=dt.UTC))
    with Vault.init(settings=settings, clock=clock) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        expired = v.put_many(crm, "customers", [
            {"full_name": f"Old {i}", "email": f"old{i}@example.com", "device_info": {"i": i}}
            for i in range(EXPIRED)], purpose="account_management",
            subject_ids=[f"old-{i}" for i in range(EXPIRED)], jurisdiction="DE")
        clock.set(dt.datetime.now(dt.UTC))
        fresh = v.put_many(crm, "customers", [
            {"full_name": f"New {i}", "email": f"new{i}@example.com"} for i in range(FRESH)],
            purpose="account_management", jurisdiction="CN")
    return set(expired), set(fresh), {f"old-{i}" for i in range(EXPIRED)}


def _sweep_entries(v: Vault) -> list[Any]:
    t = AuditEntryRow.__table__
    with v.engine.connect() as conn:
        return list(conn.execute(select(t.c.record_ids, t.c.reason)
                                 .where(t.c.action == "retention.sweep")))


def test_sigkill_mid_sweep_then_next_run_finishes_exactly(settings: VaultSettings,
                                                          tmp_path: Path) -> None:
    """Killed after a few batches, a second run leaves exactly the unexpired records,
    names every expired record in exactly one batch entry, shreds every expired
    subject, and the audit chain verifies."""
    expired, fresh, old_subjects = _populate(settings)
    # Not next to the vault's folder (named "vault"), which would shadow the package.
    (tmp_path / "child").mkdir()
    script = tmp_path / "child" / "sweep_child.py"
    script.write_text(CHILD, encoding="utf-8")
    errors = tmp_path / "child" / "stderr.txt"
    seen = []
    with errors.open("w") as err, subprocess.Popen(
            [sys.executable, str(script), str(BATCH)], env=_env(settings),
            stdout=subprocess.PIPE, stderr=err, text=True) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                seen.append(line.strip())
                if line.startswith("batch ") and int(line.split()[1]) >= 3 * BATCH:
                    time.sleep(random.uniform(0.0, 0.04))   # inside a batch or between
                    os.kill(proc.pid, signal.SIGKILL)
                    break
        finally:
            code = proc.wait(timeout=60)
    assert code == -signal.SIGKILL, (code, seen, errors.read_text())
    assert "finished" not in seen

    with Vault.open(settings=settings) as v:
        with v.engine.connect() as conn:
            left = set(conn.execute(select(RecordRow.__table__.c.id)).scalars())
            runs = conn.execute(select(RetentionRunRow.__table__)).all()
        assert fresh <= left and left & expired and expired - left, "killed mid-run"
        assert [r.status for r in runs] == ["running"]
        first = runs[0]

        report = v.retention.sweep(batch_size=BATCH)
        assert report.interrupted_runs == [first.id]
        with v.engine.connect() as conn:
            left = set(conn.execute(select(RecordRow.__table__.c.id)).scalars())
            statuses = dict(conn.execute(select(RetentionRunRow.__table__.c.id,
                                                RetentionRunRow.__table__.c.status)).all())
        assert left == fresh
        assert statuses == {first.id: "interrupted", report.run_id: "completed"}

        named = Counter(rid for e in _sweep_entries(v) for rid in json.loads(e.record_ids))
        assert set(named) == expired and set(named.values()) == {1}
        batches = {e.reason.split(":")[1] for e in _sweep_entries(v)}
        assert batches == {first.id, report.run_id}
        run1 = v.retention.run(first.id)
        assert run1.records_deleted + report.records_deleted == EXPIRED
        assert all(v.keystore.is_destroyed("acme", s) for s in old_subjects)
        assert v.retention.sweep().records_processed == 0
        assert v.audit.verify().ok


def test_concurrent_sweeps_never_remove_a_record_twice(settings: VaultSettings) -> None:
    """Two sweepers (own engines, threads) on one vault: every expired record is removed
    by exactly one batch of one of them (SKIP LOCKED on PostgreSQL, the write lock on
    SQLite) and the audit chain verifies."""
    import threading

    expired, fresh, old_subjects = _populate(settings)
    reports = []
    errors: list[BaseException] = []

    def sweeper() -> None:
        try:
            with Vault.open(settings=settings) as v:
                reports.append(v.retention.sweep(batch_size=20))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sum(r.records_deleted for r in reports) == EXPIRED
    # Each subject is taken off the shred queue by exactly one sweeper: shredded,
    # counted and audited once.
    assert sum(r.subjects_shredded for r in reports) == EXPIRED
    with Vault.open(settings=settings) as v:
        with v.engine.connect() as conn:
            left = set(conn.execute(select(RecordRow.__table__.c.id)).scalars())
            t = AuditEntryRow.__table__
            shredded = Counter(p for (subjects,) in conn.execute(
                select(t.c.subjects).where(t.c.action == "retention.shred"))
                for p in json.loads(subjects))
        assert left == fresh
        named = Counter(rid for e in _sweep_entries(v) for rid in json.loads(e.record_ids))
        assert set(named) == expired and set(named.values()) == {1}
        assert len(shredded) == EXPIRED and set(shredded.values()) == {1}
        assert all(v.keystore.is_destroyed("acme", s) for s in old_subjects)
        assert v.audit.verify().ok
