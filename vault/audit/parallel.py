"""Verify the audit chains in several processes at once.

Chains are independent: each links only its own entries and ends at its own
head. That is what lets writers on different subjects append without waiting
for each other, and it lets verification split the chains into contiguous
ranges and walk each range in its own process, one per core. Every worker
reads its range's heads and entries in one consistent snapshot (on PostgreSQL
all of them share the snapshot the parent exported with
``pg_export_snapshot()``; on SQLite each worker's read transaction is its own
snapshot, which is enough because no check spans two chains) and runs the same
:func:`~vault.audit.chain.verify_rows` as a serial walk; the findings are merged.

Workers are forked, so they start in milliseconds instead of re-importing
Vault: the parent must not be inside SQLite or libpq on another thread at that
moment. ``workers=None`` therefore only goes parallel when this process runs a
single thread and the log is large enough to repay the processes; an explicit
``workers=N`` is the caller's word that forking is safe here (the CLI's only
other thread draws the progress bar). Without ``fork`` (Windows, macOS) the
walk stays serial.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from typing import Any

from vault.audit.chain import ChainHead, Finding, VerifyReport
from vault.errors import AuditError

__all__ = ["PARALLEL_MIN_ENTRIES", "Bounds", "can_fork", "plan", "run_parts", "workers_for"]

# Below this many entries a serial walk finishes before forked workers repay
# themselves (about 10 ms each, plus a connection and the merge).
PARALLEL_MIN_ENTRIES = 100_000
MAX_WORKERS = 8

# (lowest chain, highest chain) of a part, inclusive; None is unbounded, so that
# entries in a chain that should not exist are still read by some part.
Bounds = tuple[int | None, int | None]


def can_fork() -> bool:
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


def workers_for(requested: int | None, entries: int) -> int:
    """How many processes walk the chains: ``requested`` if given (1 = serial),
    else one per core (at most :data:`MAX_WORKERS`) for a large log in a
    single-threaded process, else 1.

    Raises:
        ValueError: ``requested`` is below 1.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError("workers must be at least 1")
        return requested if can_fork() else 1
    if entries < PARALLEL_MIN_ENTRIES or threading.active_count() > 1 or not can_fork():
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def plan(heads: Mapping[int, ChainHead], workers: int) -> list[Bounds]:
    """Split the chains into at most ``workers`` contiguous ranges of about equal
    length. The first range has no lower bound and the last no upper bound."""
    chains = sorted(heads)
    total = sum(heads[c].length for c in chains)
    if workers <= 1 or len(chains) <= 1 or total == 0:
        return [(None, None)]
    share = total / min(workers, len(chains))
    cuts: list[int] = []  # the last chain of every part but the last
    running = 0
    for chain, following in pairwise(chains):
        running += heads[chain].length
        # Cut here if the part is closer to its share with this chain than with the next.
        if (running + heads[following].length / 2 >= share * (len(cuts) + 1)
                and len(cuts) < workers - 1):
            cuts.append(chain)
    if not cuts:
        return [(None, None)]
    bounds: list[Bounds] = []
    low: int | None = None
    for cut in cuts:
        bounds.append((low, cut))
        low = cut + 1
    bounds.append((low, None))
    return bounds


# Set in each forked worker before it runs: where it reports how far it got.
_COUNTERS: Any = None


def _child(task: Callable[[Bounds, Callable[[int], None]], VerifyReport], bounds: Bounds,
           slot: int, pipe: Pipe) -> None:
    def progress(done: int) -> None:
        _COUNTERS[slot] = done

    try:
        report = task(bounds, progress)
    except BaseException as exc:  # reported to the parent, which raises
        # The type only: a driver's message may quote SQL, never needed here.
        pipe.send(("error", type(exc).__name__))
    else:
        pipe.send(("ok", report))
    finally:
        pipe.close()


def run_parts(
    task: Callable[[Bounds, Callable[[int], None]], VerifyReport],
    parts: Sequence[Bounds],
    *,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> VerifyReport:
    """Run ``task(bounds, progress)`` for every part in its own forked process and
    merge the reports (entries and chains add up; findings are re-ranked).

    ``task`` runs in the child: it must open its own database connection.

    Raises:
        AuditError: a worker failed or died before reporting.
    """
    global _COUNTERS
    ctx = multiprocessing.get_context("fork")
    counters = ctx.RawArray("q", len(parts))
    _COUNTERS = counters
    children: list[tuple[Any, Pipe]] = []
    try:
        for slot, bounds in enumerate(parts):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(task, bounds, slot, send), daemon=True)
            proc.start()
            send.close()
            children.append((proc, receive))
        results: dict[int, VerifyReport] = {}
        failures: list[str] = []
        waiting = {receive: slot for slot, (_proc, receive) in enumerate(children)}
        while waiting:
            ready = wait(list(waiting), timeout=0.2)
            for receive in [r for r in waiting if r in ready]:
                slot = waiting.pop(receive)
                try:
                    status, value = receive.recv()
                except EOFError:
                    failures.append(f"worker {slot} died")
                    continue
                if status == "ok":
                    results[slot] = value
                else:
                    failures.append(f"worker {slot}: {value}")
            if progress is not None:
                progress(min(sum(counters), total), total)
        if failures:
            raise AuditError("audit verification failed to read the log: " + "; ".join(failures))
    finally:
        for proc, receive in children:
            receive.close()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        _COUNTERS = None
    return merge([results[slot] for slot in range(len(parts))])


def merge(reports: Sequence[VerifyReport]) -> VerifyReport:
    """One report for chains walked in parts."""
    findings: list[Finding] = [f for r in reports for f in r.findings]
    heads = tuple(sorted((h for r in reports for h in r.heads), key=lambda h: h.chain))
    return VerifyReport.from_findings(findings, entries=sum(r.entries for r in reports),
                                      chains=sum(r.chains for r in reports), heads=heads)
