"""The audit log in the data database: append inside the caller's transaction, verify.

Appending locks each touched chain's head row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises writers), so two
writers can never fork a chain; the unique constraint on (chain, prev_hash)
is the backstop. A process remembers the heads it last wrote and first tries
to move a head with ``UPDATE ... WHERE length = remembered AND head_hash =
remembered`` (which locks the row as well): if another writer moved it since,
nothing matches and the head is read and locked as above. The common case
costs two statements per chain instead of three.

Entries are written in format 2 (see :mod:`vault.audit.chain`), whose hash
binds the global ``seq`` too, so the writer assigns it before hashing instead
of leaving it to the database: on SQLite, ``max(seq) + 1`` onwards (the write
lock taken at ``BEGIN IMMEDIATE`` makes it stable until commit, and the
primary key is the backstop); on PostgreSQL, values of the column's own
sequence (``nextval``, never rolled back, so concurrent writers never collide).
Within a chain ``seq`` increases with the position, which ``verify`` checks:
values drawn before a chain's head was locked are used only if the head had
not moved since this process last wrote it; otherwise fresh ones are drawn
after the lock.
"""

from __future__ import annotations

import re
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, Table, bindparam, func, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from vault.audit.chain import (
    CURRENT_FORMAT,
    EMPTY_CONTEXT,
    FINDINGS_LIMIT,
    FORMAT_1,
    FORMAT_2,
    GENESIS_HASH,
    HASH_FORMAT,
    HASH_FORMAT_2,
    AuditEvent,
    ChainHead,
    Damage,
    Finding,
    VerifyReport,
    chain_for,
    clean_text,
    encode_context,
    encode_list,
    entry_hash_v2,
    format_ts,
    verify_texts,
)
from vault.audit.checkpoint import load_checkpoints, verify_checkpoints
from vault.audit.context import current_context, current_request_id
from vault.audit.parallel import Bounds, plan, run_parts, workers_for
from vault.clock import Clock
from vault.errors import AuditError, ConfigError
from vault.logging import get_logger
from vault.store.engine import is_postgres, make_engine
from vault.store.models import AuditEntryRow, AuditHead
from vault.store.retry import is_retryable, transaction_attempts

__all__ = ["AuditLog"]

log = get_logger(__name__)

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
_MAX_SEQ = select(func.coalesce(func.max(_ENTRY.c.seq), 0))
_SEQUENCE_NAME = text("SELECT pg_get_serial_sequence('audit_log', 'seq')")
_NEXT_SEQS = text("SELECT nextval(CAST(:sequence AS regclass)) "
                  "FROM generate_series(1, :count)")
_MOVE_KNOWN_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.chain == bindparam("head_chain"), _HEAD.c.length == bindparam("old_length"),
           _HEAD.c.head_hash == bindparam("old_hash"))
    .values(length=bindparam("new_length"), head_hash=bindparam("new_hash"))
)


# The hash input of every entry (vault.audit.chain.hash_text / hash_text_v2), built by
# the database: the driver then hands over one value per entry instead of seventeen,
# which is most of what a walk costs. A stored NONE_MARK (U+001E) in a nullable column
# becomes U+FFFD, so it cannot pass for an absent value; likewise a "T" in a SQLite ts
# (stored "YYYY-MM-DD HH:MM:SS.ffffff"), so that "2026-01-01T09:00:00.000000", which
# sorts apart from the stored form, cannot pass for it.
_SQLITE_FORMAT_1 = HASH_FORMAT.replace("%", "%%") + "\x1f%s" * 15
_SQLITE_FORMAT_2 = HASH_FORMAT_2.replace("%", "%%") + "\x1f%s" * 17
_NULLABLE_SQLITE = "coalesce(replace({0}, '\x1e', '\ufffd'), '\x1e')"
_NULLABLE_PG = "coalesce(replace({0}, chr(30), chr(65533)), chr(30))"
_TS_SQLITE = "replace(replace(ts, 'T', '\ufffd'), ' ', 'T') || 'Z'"
_TS_PG = "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

# SQLite keeps a value of any storage class in any column, and printf('%s', ...)
# renders a BLOB like the text it holds: a row cast to BLOB would hash as before
# and yet fall out of every report filter. Text columns must hold text (TEXT
# affinity turns a number into text, and NOT NULL keeps NULL out, while the
# declared types hold: see _check_schema), so per row it is enough that none holds
# a BLOB (BLOBs sort above everything: one max() for all) and that ts, of NUMERIC
# affinity, holds text (numbers sort below text).
_TEXT_COLUMNS = ("request_id", "tenant", "actor", "action", "record_ids", "subjects", "fields",
                 "decision", "context", "prev_hash", "hash")
_NULLABLE_COLUMNS = ("collection", "purpose", "reason")
_WELL_TYPED_SQLITE = (
    "max(ts, " + ", ".join(_TEXT_COLUMNS)
    + "".join(f", ifnull({c}, '')" for c in _NULLABLE_COLUMNS) + ") < X'' AND ts >= ''")
# What is wrong with a row that is not well typed: " column:storage-class" words.
_TYPE_WORDS_SQLITE = " || ".join(
    ["CASE WHEN typeof(ts) != 'text' THEN ' ts:' || typeof(ts) ELSE '' END"]
    + [f"CASE WHEN typeof({c}) != 'text' THEN ' {c}:' || typeof({c}) ELSE '' END"
       for c in _TEXT_COLUMNS]
    + [f"CASE WHEN typeof({c}) NOT IN ('text', 'null') THEN ' {c}:' || typeof({c}) ELSE '' END"
       for c in _NULLABLE_COLUMNS])

_COLUMNS_1 = ("chain{i}, chain_seq{i}, {ts}, request_id, tenant, actor, action, {collection}, "
              "record_ids, subjects, fields, {purpose}, decision, {reason}, prev_hash")
_COLUMNS_2 = ("chain{i}, chain_seq{i}, seq{i}, {ts}, request_id, tenant, actor, action, "
              "{collection}, record_ids, subjects, fields, {purpose}, decision, {reason}, "
              "context, prev_hash")


def _columns(template: str, ts: str, nullable: str, integer: str = "") -> str:
    return template.format(ts=ts, i=integer,
                           **{c: nullable.format(c) for c in _NULLABLE_COLUMNS})


def _text_sql(dialect: str, malformed: str) -> str:
    """The expression of an entry's hash input, by its format. A row the rules
    cannot hash (an unknown format, a format-1 row with a context, on SQLite a
    column of the wrong storage class) gets ``malformed`` and words saying why
    instead (see :func:`vault.audit.chain.verify_texts`)."""
    if not re.fullmatch(r"[0-9a-f]{32}", malformed) or not all(
            re.fullmatch(r"[a-z0-9.]+", tag) for tag in (HASH_FORMAT, HASH_FORMAT_2)):
        raise AuditError("unexpected hash format name")
    bad = f"'{malformed}'"
    if dialect == "sqlite":
        one = f"printf(:f1, {_columns(_COLUMNS_1, _TS_SQLITE, _NULLABLE_SQLITE)})"
        two = f"printf(:f2, {_columns(_COLUMNS_2, _TS_SQLITE, _NULLABLE_SQLITE)})"
        return (f"CAST(CASE WHEN {_WELL_TYPED_SQLITE} THEN CASE format WHEN {FORMAT_2} THEN "
                f"{two} WHEN {FORMAT_1} THEN CASE context WHEN '{EMPTY_CONTEXT}' THEN {one} "
                f"ELSE {bad} || ' context' END ELSE {bad} || ' format' END "
                f"ELSE {bad} || {_TYPE_WORDS_SQLITE} END AS BLOB)")
    one = (f"concat_ws(chr(31), '{HASH_FORMAT}', "
           f"{_columns(_COLUMNS_1, _TS_PG, _NULLABLE_PG, '::text')})")
    two = (f"concat_ws(chr(31), '{HASH_FORMAT_2}', "
           f"{_columns(_COLUMNS_2, _TS_PG, _NULLABLE_PG, '::text')})")
    return (f"convert_to(CASE format WHEN {FORMAT_2} THEN {two} WHEN {FORMAT_1} THEN "
            f"CASE context WHEN '{EMPTY_CONTEXT}' THEN {one} ELSE {bad} || ' context' END "
            f"ELSE {bad} || ' format' END, 'UTF8')")


# SQLite: the rows whose chain and position are integers (any column holds any type there).
_TYPED_SQLITE = "typeof(chain) = 'integer' AND typeof(chain_seq) = 'integer'"

# SQLite: the declared type (affinity) and NOT NULL of each audit_log column that the
# per-row check relies on. A table rebuilt with other declarations is damage.
_AFFINITY = {
    **dict.fromkeys(_TEXT_COLUMNS, ("TEXT", True)),
    **dict.fromkeys(_NULLABLE_COLUMNS, ("TEXT", False)),
    "seq": ("INTEGER", True), "chain": ("INTEGER", True), "chain_seq": ("INTEGER", True),
    "format": ("INTEGER", True), "ts": ("NUMERIC", True),
}


def _affinity(declared: str) -> str:
    """SQLite's affinity rules (https://sqlite.org/datatype3.html, 3.1)."""
    upper = declared.upper()
    if "INT" in upper:
        return "INTEGER"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in upper or not upper:
        return "BLOB"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


# Test-only switch, never cleared in production: with it False, ``append`` appends
# after the head as this process last wrote it (or read it, unlocked) and moves the
# head unconditionally, as a writer without the chain lock would. The concurrency
# test's control run (tests/security/test_concurrency.py) clears it, with the
# (chain, chain_seq) and (chain, prev_hash) backstops dropped, to show that the
# test sees the forks that result.
CHAIN_LOCK = True

_UNLOCKED_HEAD = (
    select(_HEAD.c.length, _HEAD.c.head_hash).where(_HEAD.c.chain == bindparam("lock_chain")))

_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f-]{1,64}")


def _progress_of(progress: Callable[[int, int], None] | None, total: int
                 ) -> Callable[[int], None] | None:
    if progress is None:
        return None
    report = progress

    def step(done: int) -> None:
        report(done, total)

    return step


def _entries(chain: int, events: Sequence[AuditEvent], seqs: Sequence[int], length: int,
             prev: str, ts: str, now: Any, request_id: str | None
             ) -> tuple[list[dict[str, Any]], int, str]:
    """The format-2 rows of ``events`` (numbered ``seqs``) appended after (``length``,
    ``prev``): rows, new length, new head."""
    rows: list[dict[str, Any]] = []
    around = current_context()
    for event, seq in zip(events, seqs, strict=True):
        length += 1
        row = {
            "seq": seq,
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
            "context": encode_context({**around, **event.context} if around
                                      else event.context),
            "prev_hash": prev,
        }
        row["hash"] = prev = entry_hash_v2(ts=ts, **row)  # type: ignore[arg-type]
        row["ts"] = now
        row["format"] = CURRENT_FORMAT
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
        self._sequence: str | None = None  # PostgreSQL: the seq column's sequence

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
            postgres = is_postgres(self._engine)
            # SQLite: one draw for the whole call (the write lock is already held).
            drawn = iter(() if postgres else self._draw_seqs(conn, len(events)))
            # Lock heads in chain order so two writers never deadlock.
            for chain in sorted(by_chain):
                events_of = by_chain[chain]
                seqs: list[int] = [] if postgres else [next(drawn) for _ in events_of]
                rows: list[dict[str, Any]] | None = None
                known = self._known.get(chain)
                if known is not None:
                    if postgres:
                        seqs = self._draw_seqs(conn, len(events_of))
                    rows, length, last = _entries(chain, events_of, seqs, *known, ts, now,
                                                  request_id)
                    moved = conn.execute(_MOVE_KNOWN_HEAD if CHAIN_LOCK else _MOVE_HEAD, {
                        "head_chain": chain, "old_length": known[0], "old_hash": known[1],
                        "new_length": length, "new_hash": last}).rowcount
                    if moved != 1:
                        rows = None
                if rows is None:
                    head = conn.execute(_LOCK_HEAD if CHAIN_LOCK else _UNLOCKED_HEAD,
                                        {"lock_chain": chain}).one_or_none()
                    if head is None:
                        raise AuditError(
                            f"audit chain {chain} has no head; was the vault initialised?")
                    if postgres:
                        # Under the lock: numbers drawn before it (for the guess above)
                        # may be below those another writer has put in this chain since.
                        seqs = self._draw_seqs(conn, len(events_of))
                    rows, length, last = _entries(chain, events_of, seqs, int(head.length),
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

    def _draw_seqs(self, conn: Connection, count: int) -> list[int]:
        """``count`` new global sequence numbers, ascending (see the module docstring)."""
        if not is_postgres(self._engine):
            top = conn.execute(_MAX_SEQ).scalar_one()
            start = int(top) + 1
            return list(range(start, start + count))
        if self._sequence is None:
            name = conn.execute(_SEQUENCE_NAME).scalar_one()
            if name is None:
                raise AuditError("the audit log's seq column has no sequence")
            self._sequence = str(name)
        return sorted(int(v) for v in conn.execute(
            _NEXT_SEQS, {"sequence": self._sequence, "count": count}).scalars())

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
        schema = self._schema_findings()
        try:
            report = self._walk_chains(progress, workers)
            if not schema:
                return report
            return VerifyReport.from_findings(
                [*schema, *report.findings], entries=report.entries, chains=report.chains,
                heads=report.heads)
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
                [*schema, *walked.findings, *untyped], entries=walked.entries + rows,
                chains=walked.chains, heads=walked.heads)

    def _schema_findings(self) -> list[Finding]:
        """SQLite: the audit_log columns whose declared type or NOT NULL differ from
        the schema's (the per-row type check relies on them; only a table rebuilt by
        hand changes them)."""
        if self._engine.dialect.name != "sqlite":
            return []
        with self._snapshot() as conn:
            declared = {str(r[1]): (str(r[2]), bool(r[3])) for r in
                        conn.exec_driver_sql("PRAGMA table_info(audit_log)")}
        findings: list[Finding] = []
        for column, (affinity, not_null) in _AFFINITY.items():
            if column not in declared:
                what = "is missing"
            elif _affinity(declared[column][0]) != affinity:
                what = f"has lost its {affinity} type"
            elif not_null and not declared[column][1] and column != "seq":
                what = "accepts NULL"
            else:
                continue
            findings.append(Finding(
                Damage.MODIFIED, None, None, None,
                f"the audit_log table was rebuilt: its column {column} {what}, so its rows "
                "cannot be trusted to hold what they were written with"))
        return findings

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
        # Unpredictable, so that no stored hash can be the hash of a malformed row's text.
        malformed = secrets.token_hex(16)
        # Every interpolated piece is ours: integers, a fixed column list and a hex
        # token; no caller value reaches this text (hence the two suppressions).
        sql = (f"SELECT seq, chain, chain_seq, {_text_sql(self._engine.dialect.name, malformed)}, "  # noqa: S608  # nosec B608
               f"subjects, prev_hash, hash FROM audit_log {'WHERE ' + where if where else ''} "
               "ORDER BY chain, chain_seq")
        if everywhere is None:
            everywhere = self.heads(conn)
        heads = {chain: head for chain, head in everywhere.items()
                 if (low is None or chain >= low) and (high is None or chain <= high)}
        fetch: Callable[[int], Sequence[Sequence[Any]]]
        if self._engine.dialect.name == "sqlite":
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.execute(sql, {"f1": _SQLITE_FORMAT_1, "f2": _SQLITE_FORMAT_2})
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
            return verify_texts(rows(), heads, chains=self._chains, all_heads=everywhere,
                                malformed=malformed.encode())
        finally:
            close()
