"""Matrix row "Concurrency" (issue 15): many writers at once, mixed with reads and
searches, lose, duplicate and fork no audit entry, and every write stays readable.

SQLite: 8 processes x 500 audited writes. PostgreSQL: 32 connections (4 processes
x 8 threads, each thread its own ``Vault``, engine and pool) x 1,000. Every call
runs in its own correlation id, so "lost" and "duplicated" are counted exactly:
each id must have exactly one audit entry. Forks are counted as chain positions
or parent hashes held by more than one entry, and every chain must verify.

The control runs clear the test-only ``vault.audit.log.CHAIN_LOCK`` in every
writer and drop the unique backstops on (chain, chain_seq) and (chain, prev_hash):
then the same checks must see forks, which shows they can fail.
Writes per writer: ``VAULT_MATRIX_SQLITE_WRITES`` (default 500, the issue's
figure) and ``VAULT_MATRIX_PG_WRITES`` (default 250: the issue's 1,000 per
connection takes 2 to 4.5 minutes on a shared 2-core machine, beyond the time
the matrix has in CI; run it with ``VAULT_MATRIX_PG_WRITES=1000``).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from vault import Vault, VaultSettings

from ..conftest import PgSchemas
from .matrix import (
    CRM,
    PURPOSE,
    SHARED,
    WorkerResult,
    chain_figures,
    drop_fork_backstops,
    email_of,
    entries_per_request,
    person,
    pg_worker,
    settings_of,
    sqlite_worker,
)

SQLITE_WRITES = int(os.environ.get("VAULT_MATRIX_SQLITE_WRITES", "500"))
PG_WRITES = int(os.environ.get("VAULT_MATRIX_PG_WRITES", "250"))
START = 4.0  # seconds from now at which every writer starts (after spawning and opening)


def _prepare(settings: VaultSettings, *, control: bool) -> int:
    """Initialise the vault (the shared subject exists before the writers start);
    the number of audit entries before the run."""
    with Vault.init(settings=settings) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        v.put(CRM, "customers", person(0, 0), purpose=PURPOSE, subject_id=SHARED)
        if control:
            drop_fork_backstops(v.engine)
        return v.audit_log.count()


def _check(settings: VaultSettings, results: Iterable[WorkerResult], before: int,
           label: str, seconds: float) -> str:
    """Every figure of a locked run; the summary line (printed, and in messages)."""
    results = list(results)
    errors = [e for r in results for e in r.errors]
    assert not errors, f"{label}: {len(errors)} worker errors, first: {errors[:3]}"
    expected = {rid: n for r in results for rid, n in r.request_ids.items()}
    written = {rid: wn for r in results for rid, wn in r.written.items()}
    with Vault.open(settings=settings) as v:
        per_request = entries_per_request(v.engine)
        figures = chain_figures(v.engine)
        lost = set(expected) - set(per_request)
        duplicated = {rid for rid, n in per_request.items() if n > expected.get(rid, 0)}
        lost |= {rid for rid, n in per_request.items() if n < expected.get(rid, 0)}
        unexpected = set(per_request) - set(expected)
        started = time.monotonic()
        report = v.audit_log.verify()
        verify_s = time.monotonic() - started
        summary = (
            f"{label}: {len(results)} writers, {len(written)} writes, "
            f"{sum(r.reads for r in results)} reads, {sum(r.searches for r in results)} "
            f"searches, {sum(r.misses for r in results)} missing searches in {seconds:.1f}s; "
            f"audit entries {figures.entries} in {figures.chains} chains, verified "
            f"{report.entries} ({'ok' if report.ok else 'FAILED'}) in {verify_s:.1f}s; "
            f"lost {len(lost)}, duplicated {len(duplicated)}, forked positions "
            f"{figures.forked_positions}, forked parents {figures.forked_parents}, "
            f"chains with gaps {figures.gaps}")
        print(summary)
        assert not lost and not duplicated and not unexpected, summary
        assert figures.forked_positions == figures.forked_parents == figures.gaps == 0, summary
        assert report.ok, f"{summary}: {report}"
        assert report.entries == figures.entries == before + sum(expected.values()), summary
        # Every write readable, as written (batches of get_many).
        ids = sorted(written)
        unreadable = 0
        for i in range(0, len(ids), 500):
            batch = ids[i:i + 500]
            for record in v.get_many(CRM, "customers", batch, purpose=PURPOSE):
                if record.data.get("email") != email_of(*written[record.id]):
                    unreadable += 1
        assert unreadable == 0, f"{summary}; {unreadable} records not read back as written"
        print(f"{label}: all {len(ids)} written records read back as written")
    return summary


def _check_control(settings: VaultSettings, results: Iterable[WorkerResult],
                   label: str) -> None:
    """The control run must show forks, and verify must fail."""
    results = list(results)
    with Vault.open(settings=settings) as v:
        figures = chain_figures(v.engine)
        report = v.audit_log.verify()
    summary = (f"{label} (chain lock off, backstops dropped): "
               f"{sum(len(r.written) for r in results)} writes, audit entries "
               f"{figures.entries}; forked positions {figures.forked_positions}, forked "
               f"parents {figures.forked_parents}; verify "
               f"{'ok' if report.ok else 'FAILED'} with {len(report.findings)} findings")
    print(summary)
    assert figures.forked_positions > 0 and figures.forked_parents > 0, summary
    assert not report.ok, summary


def _run_sqlite(settings: VaultSettings, processes: int, writes: int, *, lock: bool,
                read_every: int, search_every: int) -> tuple[list[WorkerResult], float]:
    ctx = multiprocessing.get_context("spawn")
    started = time.monotonic()
    with ctx.Pool(processes) as pool:
        results = pool.starmap(sqlite_worker, [
            (str(settings.home), w, writes, read_every, search_every, lock, time.time() + START)
            for w in range(1, processes + 1)])
    return results, time.monotonic() - started


def _run_pg(settings: VaultSettings, processes: int, threads: int, writes: int, *,
            lock: bool, read_every: int, search_every: int
            ) -> tuple[list[WorkerResult], float]:
    ctx = multiprocessing.get_context("spawn")
    started = time.monotonic()
    with ctx.Pool(processes) as pool:
        nested = pool.starmap(pg_worker, [
            (str(settings.home), settings.database_url, settings.keystore_url,
             1 + p * threads, threads, writes, read_every, search_every, lock,
             time.time() + START)
            for p in range(processes)])
    return [r for group in nested for r in group], time.monotonic() - started


def _pg_settings(pg_schemas: PgSchemas, tmp_path: Path) -> VaultSettings:
    return settings_of(str(tmp_path / "vault"), pg_schemas.url(pg_schemas.names[0]),
                       pg_schemas.url(pg_schemas.names[1]))


@pytest.mark.heavy
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_eight_processes_write_read_and_search_on_sqlite(tmp_path: Path) -> None:
    settings = settings_of(str(tmp_path / "vault"), None, None)
    before = _prepare(settings, control=False)
    results, seconds = _run_sqlite(settings, 8, SQLITE_WRITES, lock=True, read_every=2,
                                   search_every=5)
    _check(settings, results, before, "sqlite 8 processes", seconds)


@pytest.mark.heavy
@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_thirty_two_connections_write_read_and_search_on_postgres(
        pg_schemas: PgSchemas, tmp_path: Path) -> None:
    settings = _pg_settings(pg_schemas, tmp_path)
    before = _prepare(settings, control=False)
    results, seconds = _run_pg(settings, 4, 8, PG_WRITES, lock=True, read_every=4,
                               search_every=10)
    _check(settings, results, before, "postgres 32 connections", seconds)


@pytest.mark.slow
def test_control_without_the_chain_lock_forks_on_sqlite(tmp_path: Path) -> None:
    settings = settings_of(str(tmp_path / "vault"), None, None)
    _prepare(settings, control=True)
    results, _ = _run_sqlite(settings, 4, 60, lock=False, read_every=0, search_every=0)
    _check_control(settings, results, "sqlite control")


@pytest.mark.slow
@pytest.mark.postgres
def test_control_without_the_chain_lock_forks_on_postgres(pg_schemas: PgSchemas,
                                                          tmp_path: Path) -> None:
    settings = _pg_settings(pg_schemas, tmp_path)
    _prepare(settings, control=True)
    results, _ = _run_pg(settings, 2, 4, 40, lock=False, read_every=0, search_every=0)
    _check_control(settings, results, "postgres control")


def test_the_chain_lock_is_on_by_default() -> None:
    """The switch is for the control runs only: nothing may ship with it off."""
    import vault.audit.log

    assert vault.audit.log.CHAIN_LOCK is True
