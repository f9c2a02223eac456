"""The audit log in the data database: append inside the caller's transaction, verify.

Appending locks each touched chain's head row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises writers), so two
writers can never fork a chain; the unique constraint on (chain, prev_hash)
is the backstop. A process remembers the heads it last wrote and first tries
to move a head with ``UPDATE ... WHERE length = remembered AND head_hash =
remembered`` (which locks the row as well): if another writer moved it since,
nothing matches and the head is read and locked as above. The common case
costs two statements per chain instead of three.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, Table, bindparam, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from vault.audit.chain import (
    FINDINGS_LIMIT,
    GENESIS_HASH,
    HASH_FORMAT,
    AuditEvent,
    ChainHead,
    Damage,
    Finding,
    VerifyReport,
    chain_for,
    clean_text,
    encode_list,
    entry_hash,
    format_ts,
    verify_texts,
)
from vault.audit.checkpoint import load_checkpoints, verify_checkpoints
from vault.audit.context import current_request_id
from vault.audit.parallel import Bounds, plan, run_parts, workers_for
from vault.clock import Clock
from vault.errors import AuditError, ConfigError
from vault.store.engine import is_postgres, make_engine
from vault.store.models import AuditEntryRow, AuditHead
from vault.store.retry import is_retryable, transaction_attempts

__all__ = ["AuditLog"]

log = structlog.get_logger(__name__)

_ENTRY = cast(Table, AuditEntryRow.__table__)
_HEAD = cast(Table, AuditHead.__table__)

# Built once: every audited call runs these three, and building a statement
# costs more than executing it from SQLAlchemy's compiled cache.
_LOCK_HEAD = (
    select(_HEAD.c.length, _HEAD.c.head_hash)
    .where(_HEAD.c.chain == bindparam("lock_chain"))
    .with_for_update()
)
_INSERT_ENTRIES = insert(_ENTRY)
_MOVE_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.chain == bindparam("head_chain"))
    .values(length=bindparam("new_length"), head_hash=bindparam("new_hash"))
)
_MOVE_KNOWN_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.chain == bindparam("head_chain"), _HEAD.c.length == bindparam("old_length"),
           _HEAD.c.head_hash == bindparam("old_hash"))
    .values(length=bindparam("new_length"), head_hash=bindparam("new_hash"))
)


# The hash input of every entry (vault.audit.chain.hash_text), built by the database:
# the driver then hands over one value per entry instead of fifteen, which is most of
# what a walk costs. A stored NONE_MARK (U+001E) in a nullable column becomes U+FFFD,
# so it cannot pass for an absent value.
_SQLITE_TEXT_FORMAT = HASH_FORMAT.replace("%", "%%") + "\x1f%s" * 15
_NULLABLE_SQLITE = "coalesce(replace({0}, char(30), char(65533)), char(30))"
_NULLABLE_PG = "coalesce(replace({0}, chr(30), chr(65533)), chr(30))"


def _text_sql(dialect: str) -> str:
    if dialect == "sqlite":  # ts stored as "YYYY-MM-DD HH:MM:SS.ffffff"
        return ("CAST(printf(?, chain, chain_seq, replace(ts, ' ', 'T') || 'Z', request_id, "
                "tenant, actor, action, " + _NULLABLE_SQLITE.format("collection")
                + ", record_ids, subjects, fields, " + _NULLABLE_SQLITE.format("purpose")
                + ", decision, " + _NULLABLE_SQLITE.format("reason") + ", prev_hash) AS BLOB)")
    if not re.fullmatch(r"[a-z0-9.]+", HASH_FORMAT):
        raise AuditError("unexpected hash format name")
    return (f"convert_to(concat_ws(chr(31), '{HASH_FORMAT}', chain::text, chain_seq::text, "
            "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), request_id, "
            "tenant, actor, action, " + _NULLABLE_PG.format("collection")
            + ", record_ids, subjects, fields, " + _NULLABLE_PG.format("purpose")
            + ", decision, " + _NULLABLE_PG.format("reason") + ", prev_hash), 'UTF8')")


# SQLite: the rows whose chain and position are integers (any column holds any type there).
_TYPED_SQLITE = "typeof(chain) = 'integer' AND typeof(chain_seq) = 'integer'"

_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f-]{1,64}")


def _progress_of(progress: Callable[[int, int], None] | None, total: int
                 ) -> Callable[[int], None] | None:
    if progress is None:
        return None
    report = progress

    def step(done: int) -> None:
        report(done, total)

    return step


def _entries(chain: int, events: Sequence[AuditEvent], length: int, prev: str, ts: str,
             now: Any, request_id: str | None) -> tuple[list[dict[str, Any]], int, str]:
    """The rows of ``events`` appended after (``length``, ``prev``): rows, new length, new head."""
    rows: list[dict[str, Any]] = []
    for event in events:
        length += 1
        row = {
            "chain": chain,
            "chain_seq": length,
            "request_id": request_id,
            "tenant": event.tenant,
            "actor": event.actor,
            "action": clean_text(event.action),
            "collection": None if event.collection is None
            else clean_text(event.collection),
            "record_ids": encode_list(event.record_ids),
            "subjects": encode_list(event.subjects),
            "fields": encode_list(event.fields),
            "purpose": None if event.purpose is None else clean_text(event.purpose),
            "decision": event.decision.value,
            "reason": None if event.reason is None else clean_text(event.reason),
            "prev_hash": prev,
        }
        row["hash"] = prev = entry_hash(ts=ts, **row)  # type: ignore[arg-type]
        row["ts"] = now
        rows.append(row)
    return rows, length, prev


class AuditLog:
    """Hash-chained, append-only audit log split into ``chains`` subject chains."""

    def __init__(self, engine: Engine, *, chains: int, clock: Clock) -> None:
        self._engine = engine
        self._chains = chains
        self._clock = clock
        # chain -> (length, head hash) this process last wrote: a guess, checked
        # by the conditional head update (a rolled-back or foreign write only
        # costs the usual read).
        self._known: dict[int, tuple[int, str]] = {}

    @property
    def chains(self) -> int:
        return self._chains

    def create_heads(self, conn: Connection) -> None:
        """Insert the empty head of every chain (at init)."""
        existing = set(conn.execute(select(_HEAD.c.chain)).scalars())
        rows = [
            {"chain": c, "length": 0, "head_hash": GENESIS_HASH}
            for c in range(self._chains + 1)
            if c not in existing
        ]
        if rows:
            conn.execute(insert(_HEAD), rows)

    def append(self, conn: Connection, events: Sequence[AuditEvent]) -> None:
        """Append ``events`` inside the caller's open transaction.

        Raises:
            AuditError: if the entries cannot be written; the caller's
                transaction must then be rolled back.
        """
        if not events:
            return
        by_chain: dict[int, list[AuditEvent]] = defaultdict(list)
        for event in events:
            by_chain[chain_for(event.subjects, self._chains)].append(event)
        now = self._clock.now()
        ts = format_ts(now)
        request_id = current_request_id()
        try:
            # Lock heads in chain order so two writers never deadlock.
            for chain in sorted(by_chain):
                events_of = by_chain[chain]
                rows: list[dict[str, Any]] | None = None
                known = self._known.get(chain)
                if known is not None:
                    rows, length, last = _entries(chain, events_of, *known, ts, now, request_id)
                    moved = conn.execute(_MOVE_KNOWN_HEAD, {
                        "head_chain": chain, "old_length": known[0], "old_hash": known[1],
                        "new_length": length, "new_hash": last}).rowcount
                    if moved != 1:
                        rows = None
                if rows is None:
                    head = conn.execute(_LOCK_HEAD, {"lock_chain": chain}).one_or_none()
                    if head is None:
                        raise AuditError(
                            f"audit chain {chain} has no head; was the vault initialised?")
                    rows, length, last = _entries(chain, events_of, int(head.length),
                                                  str(head.head_hash), ts, now, request_id)
                    conn.execute(_MOVE_HEAD,
                                 {"head_chain": chain, "new_length": length, "new_hash": last})
                conn.execute(_INSERT_ENTRIES, rows)
                self._known[chain] = (length, last)
        except AuditError:
            raise
        except SQLAlchemyError as exc:
            # A lost race (deadlock, serialisation failure, busy database, the
            # (chain, prev_hash) backstop) is marked so that the caller's
            # transaction_attempts() runs the whole transaction again.
            retryable = is_retryable(exc)
            log.error("audit_append_failed", error_type=type(exc).__name__,
                      retryable=retryable)
            raise AuditError("the audit entry could not be written",
                             retryable=retryable) from None

    def write(self, events: Sequence[AuditEvent]) -> None:
        """Append ``events`` in a transaction of their own (denials, admin events),
        retried a bounded number of times when it loses a race."""
        try:
            for attempt in transaction_attempts():
                with attempt, self._engine.begin() as conn:
                    self.append(conn, events)
        except AuditError:
            raise
        except SQLAlchemyError as exc:
            log.error("audit_write_failed", error_type=type(exc).__name__)
            raise AuditError("the audit entry could not be written") from None

    def heads(self, conn: Connection, *, typed_only: bool = False) -> dict[int, ChainHead]:
        """Every chain's recorded head (``typed_only``, SQLite: those whose length is
        an integer)."""
        stmt = select(_HEAD.c.chain, _HEAD.c.length, _HEAD.c.head_hash)
        if typed_only:
            stmt = stmt.where(func.typeof(_HEAD.c.length) == "integer")
        result = conn.execute(stmt)
        return {int(r.chain): ChainHead(int(r.chain), int(r.length), str(r.head_hash))
                for r in result}

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(_ENTRY)).scalar_one())

    def verify(
        self,
        *,
        progress: Callable[[int, int], None] | None = None,
        checkpoints: Path | None = None,
        public_key: Ed25519PublicKey | None = None,
        vault_id: str | None = None,
        workers: int | None = None,
    ) -> VerifyReport:
        """Recompute every chain, compare it with the heads and, if given, with
        signed checkpoints (``checkpoints`` folder and the ``public_key``).

        ``workers``: processes that walk the chains (see
        :func:`vault.audit.parallel.workers_for`); None picks one per core for a
        large log in a single-threaded process, 1 walks in this process.

        Raises:
            ConfigError: checkpoints without a public key, or a missing folder.
            AuditError: a verification worker failed.
            ValueError: ``workers`` below 1.
        """
        if checkpoints is not None and public_key is None:
            raise ConfigError("checking checkpoints needs the vault's public key")
        report = self._verify_chains(progress, workers)
        if checkpoints is None or public_key is None:
            return report
        found, findings = load_checkpoints(checkpoints)
        wanted: dict[int, set[int]] = defaultdict(set)
        for cp in found:
            for chain, (length, _head) in cp.chains.items():
                if length > 0:
                    wanted[chain].add(length)
        with self._snapshot() as conn:
            typed = ([func.typeof(_ENTRY.c.chain) == "integer",
                      func.typeof(_ENTRY.c.chain_seq) == "integer"]
                     if self._engine.dialect.name == "sqlite" else [])
            lengths = {int(c): int(n) for c, n in conn.execute(
                select(_ENTRY.c.chain, func.max(_ENTRY.c.chain_seq)).where(*typed)
                .group_by(_ENTRY.c.chain))}
            hashes: dict[tuple[int, int], str] = {}
            for chain, positions in wanted.items():
                ordered = sorted(positions)
                for i in range(0, len(ordered), 500):
                    hashes.update(((chain, int(p)), str(h)) for p, h in conn.execute(
                        select(_ENTRY.c.chain_seq, _ENTRY.c.hash).where(
                            _ENTRY.c.chain == chain,
                            _ENTRY.c.chain_seq.in_(ordered[i:i + 500]))))
        findings += verify_checkpoints(found, public_key, vault_id=vault_id, lengths=lengths,
                                       hash_at=lambda c, p: hashes.get((c, p)))
        if not found and not findings:
            findings.append(Finding(Damage.BAD_CHECKPOINT, None, None, None,
                                    f"no checkpoints in {checkpoints}"))
        return VerifyReport.from_findings(
            [*report.findings, *findings], entries=report.entries, chains=report.chains,
            heads=report.heads, checkpoints=len(found))

    def _snapshot(self) -> Connection:
        """A read-only view of one moment: SQLite's deferred transaction on WAL, and
        REPEATABLE READ on PostgreSQL, so that heads and entries read in two
        statements agree even while writers append."""
        conn = self._engine.connect()
        if self._engine.dialect.name == "postgresql":
            return conn.execution_options(isolation_level="REPEATABLE READ")
        return conn.execution_options(sqlite_begin="deferred")

    def _verify_chains(self, progress: Callable[[int, int], None] | None,
                       workers: int | None = None) -> VerifyReport:
        """Recompute every chain from the first entry and compare it with the heads,
        in one process or, for a large log, in one process per core (see
        :mod:`vault.audit.parallel`).

        SQLite keeps a value of any type in any column, so a row forged or altered
        to hold a chain or position that is not an integer (a plain INSERT does it,
        no trigger stands in the way) would stop the walk. Then those rows (and
        heads) are named as damage and the rest of the log is walked without them.
        """
        try:
            return self._walk_chains(progress, workers)
        except (TypeError, ValueError, AuditError):
            if self._engine.dialect.name != "sqlite":
                raise
            with self._snapshot() as conn:
                untyped, rows = self._untyped(conn)
            if not untyped:
                raise
            log.warning("audit_verify_untyped_rows", rows=rows)
            with self._snapshot() as conn:
                heads = self.heads(conn, typed_only=True)
                walked = self._scan(conn, (None, None),
                                    _progress_of(progress, sum(h.length for h in heads.values())),
                                    heads, typed_only=True)
            return VerifyReport.from_findings(
                [*walked.findings, *untyped], entries=walked.entries + rows,
                chains=walked.chains, heads=walked.heads)

    def _untyped(self, conn: Connection) -> tuple[list[Finding], int]:
        """SQLite: entries whose chain or position, and heads whose length, is not an
        integer, as findings (values are not echoed); and how many entries."""
        findings: list[Finding] = []
        rows = 0
        for seq, chain, pos, chain_type, pos_type in conn.exec_driver_sql(
                "SELECT seq, chain, chain_seq, typeof(chain), typeof(chain_seq) FROM audit_log "
                "WHERE typeof(chain) != 'integer' OR typeof(chain_seq) != 'integer' "
                "ORDER BY seq"):
            rows += 1
            if len(findings) >= FINDINGS_LIMIT:
                continue
            bad = [f"{name} holds a {kind} value" for name, kind in
                   (("chain", chain_type), ("position", pos_type)) if kind != "integer"]
            findings.append(Finding(
                Damage.MODIFIED, int(chain) if chain_type == "integer" else None,
                int(pos) if pos_type == "integer" else None, int(seq),
                f"entry {seq}: its {' and its '.join(bad)}, not an integer: "
                "the entry was altered or forged"))
        for chain, kind in conn.exec_driver_sql(
                "SELECT chain, typeof(length) FROM audit_heads "
                "WHERE typeof(length) != 'integer' ORDER BY chain"):
            findings.append(Finding(Damage.HEAD_MISMATCH, int(chain), None, None,
                                    f"the recorded head of chain {chain} holds a {kind} "
                                    "length, not an integer"))
        return findings, rows

    def _walk_chains(self, progress: Callable[[int, int], None] | None,
                     workers: int | None = None) -> VerifyReport:
        with self._snapshot() as conn:
            heads = self.heads(conn)
            total = sum(h.length for h in heads.values())
            count = workers_for(workers, total)
            if self._engine.url.database in (None, "", ":memory:") and not is_postgres(
                    self._engine):
                count = 1  # a private in-memory database: no other process can read it
            parts = plan(heads, count) if count > 1 else [(None, None)]
            if len(parts) == 1:
                return self._scan(conn, (None, None), _progress_of(progress, total), heads)
            if self._engine.dialect.name != "postgresql":
                return run_parts(self._part, parts, total=total, progress=progress)
            # Every worker reads in this transaction's snapshot.
            snapshot = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one())
            return run_parts(partial(self._part, snapshot=snapshot), parts, total=total,
                             progress=progress)

    def _part(self, bounds: Bounds, progress: Callable[[int], None], *,
              snapshot: str | None = None) -> VerifyReport:
        """Walk one range of chains: runs in a forked worker, on its own engine."""
        engine = make_engine(self._engine.url.render_as_string(hide_password=False))
        try:
            mine = AuditLog(engine, chains=self._chains, clock=self._clock)
            with mine._snapshot() as conn:
                if snapshot is not None:
                    if not _SNAPSHOT_ID.fullmatch(snapshot):
                        raise AuditError("unexpected snapshot id")
                    conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                return mine._scan(conn, bounds, progress)
        finally:
            engine.dispose()

    def _scan(self, conn: Connection, bounds: Bounds, progress: Callable[[int], None] | None,
              everywhere: dict[int, ChainHead] | None = None, *,
              typed_only: bool = False) -> VerifyReport:
        """Walk the chains within ``bounds`` (inclusive; None is open), reading their
        heads (unless ``everywhere`` holds them, read in this transaction) and
        entries in ``conn``'s transaction.

        Rows stream straight from the driver, each entry's hash input assembled
        by the database (see :func:`_text_sql`): this is the hot loop of
        ``vault audit verify``.
        """
        low, high = bounds
        where = " AND ".join(
            ([f"chain >= {int(low)}"] if low is not None else [])
            + ([f"chain <= {int(high)}"] if high is not None else [])
            + ([_TYPED_SQLITE] if typed_only else []))
        sql = (f"SELECT seq, chain, chain_seq, {_text_sql(self._engine.dialect.name)}, "  # noqa: S608
               f"subjects, prev_hash, hash FROM audit_log {'WHERE ' + where if where else ''} "
               "ORDER BY chain, chain_seq")
        if everywhere is None:
            everywhere = self.heads(conn)
        heads = {chain: head for chain, head in everywhere.items()
                 if (low is None or chain >= low) and (high is None or chain <= high)}
        fetch: Callable[[int], Sequence[Sequence[Any]]]
        if self._engine.dialect.name == "sqlite":
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.execute(sql, (_SQLITE_TEXT_FORMAT,))
            fetch, close = cursor.fetchmany, cursor.close
        else:
            result = conn.execution_options(stream_results=True, yield_per=10_000
                                            ).exec_driver_sql(sql)
            fetch, close = result.fetchmany, result.close

        def rows() -> Iterator[Sequence[Any]]:
            done = 0
            while batch := fetch(10_000):
                yield from batch
                done += len(batch)
                if progress is not None:
                    progress(done)
            if progress is not None:
                progress(done)

        try:
            return verify_texts(rows(), heads, chains=self._chains, all_heads=everywhere)
        finally:
            close()
