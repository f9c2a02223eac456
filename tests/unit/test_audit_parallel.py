"""Splitting the audit chains over worker processes: the plan covers every chain
(even ones that should not exist) exactly once, and a worker's failure or death
is an error, never a silently shorter walk."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from vault.audit import parallel
from vault.audit.chain import ChainHead, Damage, Finding, VerifyReport
from vault.errors import AuditError


def heads(*lengths: int) -> dict[int, ChainHead]:
    return {chain: ChainHead(chain, n, f"{chain:064x}") for chain, n in enumerate(lengths)}


def owner(bounds: list[parallel.Bounds], chain: int) -> list[int]:
    return [i for i, (low, high) in enumerate(bounds)
            if (low is None or chain >= low) and (high is None or chain <= high)]


@pytest.mark.parametrize(("lengths", "workers"), [
    ((5, 100, 100, 100, 100), 2),
    ((0, 10, 10, 10, 10, 10, 10, 10, 10), 3),
    ((1, 1000, 1, 1, 1), 2),
    ((3, 7), 8),
    (tuple(range(17)), 4),
])
def test_plan_covers_every_chain_once_and_balances(lengths: tuple[int, ...], workers: int
                                                   ) -> None:
    found = heads(*lengths)
    bounds = parallel.plan(found, workers)
    assert 1 < len(bounds) <= min(workers, len(lengths))
    assert bounds[0][0] is None and bounds[-1][1] is None
    for chain in [*found, -5, 99, 1 << 40]:  # stray chains belong somewhere too
        assert len(owner(bounds, chain)) == 1, (chain, bounds)
    total = sum(lengths)
    sizes = [sum(n for c, n in enumerate(lengths) if owner(bounds, c) == [i])
             for i in range(len(bounds))]
    assert sum(sizes) == total
    # no part is larger than its fair share plus the longest single chain
    assert max(sizes) <= total / len(bounds) + max(lengths)


def test_plan_keeps_a_single_part_when_there_is_nothing_to_split() -> None:
    assert parallel.plan(heads(10, 20), 1) == [(None, None)]
    assert parallel.plan(heads(10), 4) == [(None, None)]
    assert parallel.plan(heads(0, 0, 0), 4) == [(None, None)]


def test_workers_for() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        parallel.workers_for(0, 10)
    assert parallel.workers_for(3, 10) == (3 if parallel.can_fork() else 1)
    assert parallel.workers_for(None, parallel.PARALLEL_MIN_ENTRIES - 1) == 1
    big = parallel.PARALLEL_MIN_ENTRIES
    if threading.active_count() == 1 and parallel.can_fork():
        assert parallel.workers_for(None, big) == max(1, min(os.cpu_count() or 1,
                                                             parallel.MAX_WORKERS))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:  # another thread could hold a lock the forked child needs: stay serial
        assert parallel.workers_for(None, big) == 1
    finally:
        stop.set()
        other.join()


def report_of(bounds: parallel.Bounds, progress: Callable[[int], None]) -> VerifyReport:
    progress(5)
    low = -1 if bounds[0] is None else bounds[0]
    finding = Finding(Damage.MODIFIED, low, 1, 100 + low, f"in part from {low}")
    return VerifyReport.from_findings([finding], entries=5, chains=1,
                                      heads=(ChainHead(low, 5, "x"),))


def test_run_parts_merges_reports_and_reports_progress() -> None:
    if not parallel.can_fork():
        pytest.skip("needs fork")
    seen: list[tuple[int, int]] = []
    merged = parallel.run_parts(report_of, [(None, 3), (4, 9), (10, None)], total=15,
                                progress=lambda done, total: seen.append((done, total)))
    assert (merged.ok, merged.entries, merged.chains) == (False, 15, 3)
    assert sorted(f.chain for f in merged.findings) == [-1, 4, 10]
    assert [h.chain for h in merged.heads] == [-1, 4, 10]
    assert seen and seen[-1] == (15, 15)


def failing(bounds: parallel.Bounds, progress: Callable[[int], None]) -> VerifyReport:
    if bounds[0] is not None:
        raise RuntimeError("secret@example.com could not be read")
    return report_of(bounds, progress)


def dying(bounds: parallel.Bounds, progress: Callable[[int], None]) -> VerifyReport:
    if bounds[0] is not None:
        os._exit(9)
    return report_of(bounds, progress)


def test_a_failing_worker_is_an_error_without_its_message() -> None:
    if not parallel.can_fork():
        pytest.skip("needs fork")
    with pytest.raises(AuditError, match="RuntimeError") as caught:
        parallel.run_parts(failing, [(None, 3), (4, None)], total=10, progress=None)
    assert "example.com" not in str(caught.value)


def test_a_dead_worker_is_an_error() -> None:
    if not parallel.can_fork():
        pytest.skip("needs fork")
    with pytest.raises(AuditError, match="worker 1 died"):
        parallel.run_parts(dying, [(None, 3), (4, None)], total=10, progress=None)
