"""The retention sweeper: removes what has expired, in batches, crash-safely.

Each batch is one transaction that (1) selects up to ``batch_size`` expired,
unheld expiry rows, (2) deletes, prunes or anonymises their records, (3)
writes one audit entry per tenant in the batch naming every record id, and
(4) adds the batch's counts to the run's row. Either all of that commits or
none of it does, so after a crash (even SIGKILL) the next run finds exactly
the records still expired: nothing is removed twice and nothing is missed.

Crypto-shredding destroys keys in the key store, another database: the
batch's transaction queues its subjects (one ``retention_shred_batches`` row
listing them), and a later transaction dequeues them with the audit entry of
their destruction and commits after the key store's (destruction is
idempotent), so a crash in between is finished by the next run. That
transaction reads the legal holds under the tenant's hold lock: a subject a
hold covers by then is not shredded but moved to the per-subject queue
(``retention_shred_queue``). Queued subjects are shredded every
``_SHRED_EVERY`` of them and at the end of the run.

The cut-off time is read from the clock once, when the run starts.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from vault._kernel import REASON_LIMIT, Kernel
from vault.audit.chain import AuditEvent, Decision
from vault.crypto.blind_index import verification_field
from vault.crypto.envelope import RecordContext
from vault.crypto.framing import decode_envelopes, encode_envelopes
from vault.errors import CryptoError, NotFound, ShreddingIncomplete
from vault.logging import get_logger
from vault.retention.expiry import (
    ANONYMOUS_SUBJECT,
    Outcome,
    SubjectInfo,
    decide,
    subject_info,
)
from vault.retention.holdrules import active_hold_clause, lock_tenants
from vault.retention.schedule import record_expiries
from vault.store.erasures import mark_erased
from vault.store.retry import transaction_attempts
from vault.store.tables import BLIND_INDEX as _BLIND
from vault.store.tables import LEGAL_HOLDS as _HOLDS
from vault.store.tables import RECORDS as _RECORDS
from vault.store.tables import RETENTION as _RET
from vault.store.tables import RETENTION_RUNS as _RUNS
from vault.store.tables import RETENTION_SUBJECTS as _EVENTS
from vault.store.tables import SHRED_BATCHES as _BATCHES
from vault.store.tables import SHRED_QUEUE as _QUEUE
from vault.store.tables import SUBJECTS as _SUBJECTS

__all__ = ["RunStatus", "SweepReport", "Sweeper"]

log = get_logger(__name__)

Progress = Callable[[int, int], None]
_CHUNK = 2000
_CHECKPOINT_EVERY = 50_000
#: Queued subjects are shredded once this many are pending (and at the end of a run):
#: one key store transaction and one audit entry for several batches' subjects.
_SHRED_EVERY = 10_000
#: The page cache of the sweep's own SQLite connection during a run (KiB), released after.
_SQLITE_CACHE_KIB = 65_536


def _labels(fields: Iterable[str]) -> list[str]:
    """The blind_index rows of these fields: their search tokens and their
    verification-only digests (``verify:<name>``)."""
    names = sorted(fields)
    return names + [verification_field(n) for n in names]

class _Statements:
    """The hot statements for one dialect, built once, each list parameter bound as a
    single value: a JSON array read with ``json_each`` on SQLite, an array compared
    with ``= ANY`` on PostgreSQL. No per-id placeholder is rendered or processed."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        inn = self._in
        self.del_blind = delete(_BLIND).where(inn(_BLIND.c.record_id, "ids"))
        self.del_blind_fields = delete(_BLIND).where(inn(_BLIND.c.record_id, "ids"),
                                                     inn(_BLIND.c.field, "fields"))
        self.del_ret = delete(_RET).where(inn(_RET.c.record_id, "ids"))
        self.del_records = delete(_RECORDS).where(inn(_RECORDS.c.id, "ids"))
        self.load = select(
            _RECORDS.c.id.label("record_id"), _RECORDS.c.tenant, _RECORDS.c.subject_id,
            _RECORDS.c.collection, _RECORDS.c.envelopes, _RECORDS.c.created_at,
            _RECORDS.c.version, _RECORDS.c.seal,
        ).where(inn(_RECORDS.c.id, "ids"))
        self.remaining = select(_RECORDS.c.subject_id).where(
            _RECORDS.c.tenant == bindparam("t"), inn(_RECORDS.c.subject_id, "ids")).distinct()
        self.dequeue = delete(_QUEUE).where(_QUEUE.c.tenant == bindparam("t"),
                                            inn(_QUEUE.c.subject_id, "ids")
                                            ).returning(_QUEUE.c.subject_id)
        # One row per id of the bound list not queued yet, with the tenant, time and
        # run bound once (no per-subject parameter set, no per-subject datetime bind).
        each = self._each("ids")
        self.enqueue = insert(_QUEUE).from_select(
            ["tenant", "subject_id", "queued_at", "run_id"],
            select(bindparam("t", type_=String), each.c.value,
                   bindparam("now", type_=_QUEUE.c.queued_at.type),
                   bindparam("run", type_=String)).select_from(each).where(
                ~exists().where(_QUEUE.c.tenant == bindparam("t"),
                                _QUEUE.c.subject_id == each.c.value)))
        self.queue_batch = insert(_BATCHES).values(
            tenant=bindparam("t"), run_id=bindparam("run"), queued_at=bindparam("now"),
            subjects=bindparam("subjects")).returning(_BATCHES.c.id)
        self.take_batches = delete(_BATCHES).where(
            _BATCHES.c.id.in_(bindparam("ids", expanding=True))).returning(_BATCHES.c.subjects)
        self.queued_any = select(_QUEUE.c.subject_id).where(
            _QUEUE.c.tenant == bindparam("t")).limit(1)
        self.forget_events = delete(_EVENTS).where(_EVENTS.c.tenant == bindparam("t"),
                                                   inn(_EVENTS.c.subject_id, "ids"))

    def _each(self, name: str) -> Any:
        """The values of a bound list, as a table with one column, ``value``."""
        if self.dialect == "postgresql":
            return func.unnest(bindparam(name, type_=ARRAY(String))).table_valued(
                "value").render_derived()
        return func.json_each(bindparam(name, type_=String)).table_valued("value")

    def _in(self, column: Any, name: str) -> Any:
        if self.dialect == "postgresql":
            return column == any_(bindparam(name, type_=ARRAY(String)))
        if self.dialect == "sqlite":
            values = func.json_each(bindparam(name, type_=String)).table_valued("value")
            return column.in_(select(values.c.value))
        return column.in_(bindparam(name, expanding=True))

    def ids(self, items: Sequence[str]) -> Any:
        """The bound value of a list parameter."""
        if self.dialect != "sqlite":
            return list(items)
        return json_array(items)


def json_array(items: Sequence[str]) -> str:
    """``json.dumps(list(items))`` for strings, about ten times faster for the usual ids:
    when no string holds a quote, a backslash or a character that is not printable
    (what JSON would escape), the strings are joined as they are."""
    joined = '","'.join(items)
    if (items and joined.count('"') == 2 * (len(items) - 1) and "\\" not in joined
            and joined.isprintable()):
        return '["' + joined + '"]'
    return json.dumps(list(items))


@functools.cache
def _statements(dialect: str) -> _Statements:
    return _Statements(dialect)


#: Positions in the rows of ``Sweeper._select`` (the first three also in ``_Statements.load``).
_ID, _TENANT, _SUBJECT, _PURGE_DUE, _SHRED_DUE, _PSEUDONYM = 0, 1, 2, 4, 5, 6

#: In an audit entry's fields: the whole record was deleted.
_WHOLE = frozenset({"*"})


_PURGE = Outcome("delete", _WHOLE, frozenset(), None, False)
_PURGE_SHRED = Outcome("delete", _WHOLE, frozenset(), None, True)


class RunStatus:
    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    DRY_RUN = "dry_run"


@dataclass(slots=True)
class SweepReport:
    """What one sweep did (or, for a dry run, would do).

    Attributes:
        records_deleted: records removed entirely.
        records_pruned: records that lost the fields of expired categories.
        records_anonymised: records unlinked from their subject.
        subjects_shredded: subjects whose data key was destroyed.
        held: expired records skipped because a legal hold applies.
        interrupted_runs: earlier runs found unfinished (their work is finished now).
    """

    run_id: str
    dry_run: bool
    status: str
    started_at: dt.datetime
    cutoff: dt.datetime
    finished_at: dt.datetime | None = None
    batches: int = 0
    records_deleted: int = 0
    records_pruned: int = 0
    records_anonymised: int = 0
    subjects_shredded: int = 0
    held: int = 0
    rescheduled: int = 0
    interrupted_runs: list[str] = field(default_factory=list)

    @property
    def records_processed(self) -> int:
        return self.records_deleted + self.records_pruned + self.records_anonymised


def _unheld(now: dt.datetime) -> Any:
    """Expiry rows no active hold covers (neither a tenant hold nor a subject hold)."""
    return ~exists().where(
        _HOLDS.c.tenant == _RET.c.tenant,
        (_HOLDS.c.subject_id.is_(None)) | (_HOLDS.c.subject_id == _RET.c.subject_id),
        active_hold_clause(now))


class Sweeper:
    """One sweep over the expired records of a vault (use :meth:`run`)."""

    def __init__(self, kernel: Kernel, *, batch_size: int, actor: str,
                 tenant: str | None = None) -> None:
        self._k = kernel
        self._engine = kernel.engine
        self._batch_size = batch_size
        self._actor = actor
        self._tenant = tenant
        self._schedule = kernel.rules.schedule
        self._conn: Connection | None = None
        self._pseudonyms: dict[tuple[str, str], str] = {}
        self._st = _statements(self._engine.dialect.name)
        # Subjects this run queued for shredding and has not yet shredded (a held one
        # stays until its hold is lifted or the run ends; the next run finishes it).
        self._pending: dict[str, dict[str, None]] = defaultdict(dict)
        # Per tenant: the shred batch rows this run queued and has not yet taken ...
        self._pending_batches: dict[str, dict[int, list[str]]] = defaultdict(dict)
        # ... and the subjects it moved to the per-subject queue because they were held.
        self._pending_held: dict[str, set[str]] = defaultdict(set)
        # Queued by the current batch transaction (row id and subjects per tenant):
        # moved to the pending ones once it commits.
        self._queued_now: dict[str, tuple[int, list[str]]] = {}

    def _pseudonyms_of(self, tenant: str, subject_ids: Iterable[str]) -> tuple[str, ...]:
        """The subjects' pseudonyms, sorted (for an audit entry)."""
        known = self._pseudonyms
        return tuple(sorted([known.get((tenant, s)) or self._pseudonym(tenant, s)
                             for s in subject_ids]))

    def _pseudonym(self, tenant: str, subject_id: str) -> str:
        """Pseudonyms of this run's subjects, computed once (batch and shred entries)."""
        key = (tenant, subject_id)
        found = self._pseudonyms.get(key)
        if found is None:
            found = self._pseudonyms[key] = self._k.pseudonym(tenant, subject_id)
        return found

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A write transaction: on SQLite on the run's own connection, which does
        not checkpoint the WAL at every commit (see :meth:`_checkpoint`)."""
        if self._conn is None:
            with self._engine.begin() as conn:
                yield conn
            return
        with self._conn.begin():
            yield self._conn

    @contextmanager
    def _session(self) -> Iterator[None]:
        if self._engine.dialect.name != "sqlite":
            yield
            return
        self._conn = self._engine.connect()
        cache: Any = None
        try:
            with self._conn.begin():
                self._conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
                cache = self._conn.exec_driver_sql("PRAGMA cache_size").scalar()
                # A batch touches far more pages than the default 2 MiB page cache holds
                # (mostly the blind-index lookup index, in digest order): without room,
                # SQLite re-reads them from the WAL for every statement and spills
                # dirty pages mid-transaction.
                self._conn.exec_driver_sql(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
            yield
        finally:
            try:
                with self._conn.begin():
                    self._conn.exec_driver_sql("PRAGMA wal_autocheckpoint=1000")
                    if cache is not None:
                        self._conn.exec_driver_sql(f"PRAGMA cache_size={int(cache)}")
            finally:
                self._conn.close()
                self._conn = None
            # Deleted rows were zeroed in the WAL (secure_delete); copy those pages
            # into the database file and empty the WAL, so no old bytes remain.
            self._checkpoint("TRUNCATE")

    def _checkpoint(self, mode: str) -> None:
        """SQLite: checkpoint the WAL (every ``_CHECKPOINT_EVERY`` records during a run,
        so the WAL stays bounded, and ``TRUNCATE`` at its end)."""
        if self._engine.dialect.name == "sqlite":
            with self._engine.connect().execution_options(sqlite_begin="none") as conn:
                conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")

    # ------------------------------------------------------------------ queries

    def _expired(self, cutoff: dt.datetime) -> Any:
        cond = and_(_RET.c.expires_at.is_not(None), _RET.c.expires_at <= cutoff)
        if self._tenant is not None:
            cond = and_(cond, _RET.c.tenant == self._tenant)
        return cond

    def count(self, conn: Connection, cutoff: dt.datetime) -> tuple[int, int]:
        """(expired and unheld, expired but held) record counts."""
        base = select(func.count()).select_from(_RET).where(self._expired(cutoff))
        total = int(conn.execute(base).scalar_one())
        free = int(conn.execute(base.where(_unheld(cutoff))).scalar_one())
        return free, total - free

    # ------------------------------------------------------------------ run

    def run(self, *, dry_run: bool, progress: Progress | None = None) -> SweepReport:
        now = self._k.clock.now()
        report = SweepReport(run_id=uuid.uuid4().hex[:16], dry_run=dry_run,
                             status=RunStatus.RUNNING, started_at=now, cutoff=now)
        with self._engine.begin() as conn:
            if not dry_run:
                report.interrupted_runs = list(conn.execute(
                    select(_RUNS.c.id).where(_RUNS.c.status == RunStatus.RUNNING,
                                             _RUNS.c.dry_run.is_(False))).scalars())
                if report.interrupted_runs:
                    conn.execute(update(_RUNS).where(_RUNS.c.id.in_(report.interrupted_runs))
                                 .values(status=RunStatus.INTERRUPTED))
            free, held = self.count(conn, now)
            report.held = held
            conn.execute(insert(_RUNS), [{
                "id": report.run_id, "started_at": now, "finished_at": None,
                "status": RunStatus.DRY_RUN if dry_run else RunStatus.RUNNING,
                "dry_run": dry_run, "actor": self._actor, "tenant": self._tenant,
                "batches": 0, "records_deleted": 0,
                "records_pruned": 0, "records_anonymised": 0, "subjects_shredded": 0,
                "held": held}])
            self._k.audit_log.append(conn, [AuditEvent(
                tenant=self._tenant or "*", actor=self._actor, action="retention.sweep_start",
                decision=Decision.ALLOW,
                reason=(f"run:{report.run_id}:expired:{free}:held:{held}"
                        + (":dry" if dry_run else ""))[:REASON_LIMIT])])
        if progress is not None:
            progress(0, free)
        if dry_run:
            self._simulate(report, free, progress)
        else:
            with self._session():
                self._flush_shred_queue(report, run_id=None)
                done = since_checkpoint = 0
                while True:
                    n = self._batch(report)
                    if n == 0:
                        break
                    done += n
                    since_checkpoint += n
                    if since_checkpoint >= _CHECKPOINT_EVERY:
                        self._checkpoint("PASSIVE")
                        since_checkpoint = 0
                    if sum(map(len, self._pending.values())) >= _SHRED_EVERY:
                        self._flush_shred_queue(report, run_id=report.run_id)
                    if progress is not None:
                        progress(min(done, max(free, done)), max(free, done))
                self._flush_shred_queue(report, run_id=report.run_id)
        incomplete: ShreddingIncomplete | None = None
        if not dry_run and report.subjects_shredded:
            try:
                self._k.keystore.checkpoint()
            except ShreddingIncomplete as exc:
                # The keys are destroyed, but their old bytes may still be in the key
                # store's WAL: the run is recorded and audited as failed, then raised.
                incomplete = exc
        report.finished_at = self._k.clock.now()
        if dry_run:
            report.status = RunStatus.DRY_RUN
        else:
            report.status = RunStatus.COMPLETED if incomplete is None else RunStatus.FAILED
        outcome = "" if incomplete is None else f":{incomplete.code}"
        with self._engine.begin() as conn:
            conn.execute(update(_RUNS).where(_RUNS.c.id == report.run_id).values(
                finished_at=report.finished_at, status=report.status,
                subjects_shredded=report.subjects_shredded, **(
                    {"batches": report.batches, "records_deleted": report.records_deleted,
                     "records_pruned": report.records_pruned,
                     "records_anonymised": report.records_anonymised} if dry_run else {})))
            self._k.audit_log.append(conn, [AuditEvent(
                tenant=self._tenant or "*", actor=self._actor, action="retention.sweep_end",
                decision=Decision.ALLOW if incomplete is None else Decision.ERROR,
                reason=(f"run:{report.run_id}:d{report.records_deleted}"
                        f":p{report.records_pruned}:a{report.records_anonymised}"
                        f":s{report.subjects_shredded}:h{report.held}"
                        )[:REASON_LIMIT - len(outcome)] + outcome)])
        if incomplete is not None:
            raise incomplete
        return report

    # ------------------------------------------------------------------ one batch

    def _select(self, conn: Connection, cutoff: dt.datetime, *, after: tuple[Any, str] | None,
                for_update: bool) -> list[Any]:
        # Due-ness is computed by the database: no timestamp conversion per row.
        # The stored pseudonym comes along (an index probe is cheaper than an HMAC).
        columns = [_RET.c.record_id, _RET.c.tenant, _RET.c.subject_id, _RET.c.collection,
                   (_RET.c.purge_at <= cutoff).label("purge_due"),
                   (_RET.c.shred_at <= cutoff).label("shred_due"), _SUBJECTS.c.pseudonym]
        if not for_update:
            columns.append(_RET.c.expires_at)     # the dry run pages by (expires_at, id)
        query = (
            select(*columns)
            .select_from(_RET.outerjoin(_SUBJECTS, (_SUBJECTS.c.tenant == _RET.c.tenant)
                                        & (_SUBJECTS.c.subject_id == _RET.c.subject_id)))
            .where(self._expired(cutoff), _unheld(cutoff))
            .order_by(_RET.c.expires_at, _RET.c.record_id)
            .limit(self._batch_size))
        if after is not None:
            query = query.where((_RET.c.expires_at > after[0])
                                | ((_RET.c.expires_at == after[0])
                                   & (_RET.c.record_id > after[1])))
        if for_update and conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=_RET)
        return list(conn.execute(query).all())

    def _recheck_holds(self, conn: Connection, rows: list[Any], cutoff: dt.datetime) -> list[Any]:
        """PostgreSQL: take the tenants' shared hold locks, then drop rows a hold
        committed since the select now covers."""
        if conn.dialect.name != "postgresql" or not rows:
            return rows
        tenants = sorted({r.tenant for r in rows})
        lock_tenants(conn, tenants)
        held = conn.execute(select(_HOLDS.c.tenant, _HOLDS.c.subject_id).where(
            _HOLDS.c.tenant.in_(tenants), active_hold_clause(cutoff))).all()
        if not held:
            return rows
        whole = {h.tenant for h in held if h.subject_id is None}
        subjects = {(h.tenant, h.subject_id) for h in held}
        return [r for r in rows if r.tenant not in whole and (r.tenant, r.subject_id)
                not in subjects]

    def _outcomes(self, conn: Connection, rows: Sequence[Any],
                  cutoff: dt.datetime) -> tuple[list[tuple[Any, Outcome]], dict[tuple[str, str],
                                                                              SubjectInfo]]:
        """Decide each record's fate. A record whose every category has expired and
        none anonymises (``purge_at`` passed) is deleted without being read; the others are
        read and decided category by category."""
        out: list[tuple[Any, Outcome]] = []
        slow: list[str] = []
        known = self._pseudonyms
        for r in rows:
            # By position: a Row's attribute lookup costs ~20 times an index.
            if r[_PSEUDONYM] is not None:
                known[(r[_TENANT], r[_SUBJECT])] = r[_PSEUDONYM]
            if r[_PURGE_DUE]:
                out.append((r, _PURGE_SHRED if r[_SHRED_DUE] else _PURGE))
            else:
                slow.append(r[_ID])
        info: dict[tuple[str, str], SubjectInfo] = {}
        if not slow:
            return out, info
        records: list[Any] = []
        for i in range(0, len(slow), _CHUNK):
            records.extend(conn.execute(self._st.load,
                                        {"ids": self._st.ids(slow[i:i + _CHUNK])}).all())
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for r in records:
            by_tenant[r.tenant].append(r.subject_id)
        for tenant, sids in by_tenant.items():
            for sid, si in subject_info(conn, tenant, sids,
                                        regime_for=self._k.rules.jurisdictions.regime_for).items():
                info[(tenant, sid)] = si
        schemas = self._k.rules.schemas
        default = SubjectInfo(regime="default")
        for r in records:
            schema = schemas.get(r.collection)
            si = info.get((r.tenant, r.subject_id), default)
            fields = decode_envelopes(r.envelopes)
            exps = record_expiries(self._schedule, schema, fields, si.regime,
                                   si.events(r.created_at))
            out.append((r, decide(schema, fields, exps, cutoff)))
        return out, info

    def _batch(self, report: SweepReport) -> int:
        cutoff = report.cutoff
        for attempt in transaction_attempts():
            with attempt, self._tx() as conn:
                self._queued_now = {}
                rows = self._select(conn, cutoff, after=None, for_update=True)
                if not rows:
                    return 0
                rows = self._recheck_holds(conn, rows, cutoff)
                outcomes, info = self._outcomes(conn, rows, cutoff)
                counts = self._apply(conn, outcomes, info, report)
                conn.execute(update(_RUNS).where(_RUNS.c.id == report.run_id).values(
                    batches=_RUNS.c.batches + 1,
                    records_deleted=_RUNS.c.records_deleted + counts["delete"],
                    records_pruned=_RUNS.c.records_pruned + counts["prune"],
                    records_anonymised=_RUNS.c.records_anonymised + counts["anonymise"]))
        for tenant, (batch_id, subjects) in self._queued_now.items():
            self._pending_batches[tenant][batch_id] = subjects
            self._pending[tenant].update(dict.fromkeys(subjects))
        self._queued_now = {}
        report.batches += 1
        report.records_deleted += counts["delete"]
        report.records_pruned += counts["prune"]
        report.records_anonymised += counts["anonymise"]
        report.rescheduled += counts["reschedule"]
        return max(len(rows), 1)

    def _apply(self, conn: Connection, outcomes: list[tuple[Any, Outcome]],
               info: dict[tuple[str, str], SubjectInfo], report: SweepReport) -> dict[str, int]:
        counts = {"delete": 0, "prune": 0, "anonymise": 0, "reschedule": 0}
        now = self._k.clock.now()
        deleted: list[str] = []
        pruned: list[dict[str, Any]] = []
        blind_gone: dict[frozenset[str], list[str]] = defaultdict(list)
        rescheduled: list[dict[str, Any]] = []
        anonymise: list[tuple[Any, Outcome]] = []
        prune: list[tuple[Any, Outcome]] = []
        shred_flags: set[tuple[str, str]] = set()
        touched: dict[str, dict[str, Any]] = defaultdict(lambda: {
            "ids": [], "subjects": set(), "fields": set()})
        purged = 0
        for row, out in outcomes:
            if out is _PURGE or out is _PURGE_SHRED:
                # The common case, kept short: the whole record goes unread. Columns
                # by position (id, tenant, subject first in both the selected rows and
                # the loaded records).
                rid, tenant, sid = row[_ID], row[_TENANT], row[_SUBJECT]
                t = touched[tenant]
                t["ids"].append(rid)
                t["subjects"].add(sid)
                t["fields"].add("*")
                deleted.append(rid)
                purged += 1
                if out is _PURGE_SHRED:
                    shred_flags.add((tenant, sid))
                continue
            counts[out.kind] += 1
            if out.shred:
                shred_flags.add((row.tenant, row.subject_id))
            if out.kind != "reschedule":
                t = touched[row.tenant]
                t["ids"].append(row.record_id)
                t["subjects"].add(row.subject_id)
                t["fields"].update(out.removed)
            if out.kind == "delete":
                deleted.append(row.record_id)
            elif out.kind == "anonymise":
                anonymise.append((row, out))
            else:
                if out.kind == "prune":
                    prune.append((row, out))
                    blind_gone[out.removed].append(row.record_id)
                cols = out.columns or {}
                rescheduled.append({
                    "rid": row.record_id, "exp": cols.get("expires_at"),
                    "cat": cols.get("category"), "act": cols.get("action"),
                    "purge": cols.get("purge_at"), "shred": cols.get("shred_at")})
        counts["delete"] += purged
        if prune:
            pruned, unsealed = self._prune(conn, prune, now)
            deleted.extend(unsealed)
            counts["prune"] -= len(unsealed)
            counts["delete"] += len(unsealed)
        for i in range(0, len(deleted), _CHUNK):
            bound = {"ids": self._st.ids(deleted[i:i + _CHUNK])}
            # Their blind-index tokens and expiry rows first, each by its record-id index,
            # set-wise: cheaper than the ON DELETE CASCADE (which stays as a safety net)
            # firing per deleted record.
            conn.execute(self._st.del_blind, bound)
            conn.execute(self._st.del_ret, bound)
            conn.execute(self._st.del_records, bound)
        if pruned:
            conn.execute(update(_RECORDS).where(_RECORDS.c.id == bindparam("rid")).values(
                envelopes=bindparam("env"), updated_at=bindparam("ts"),
                version=_RECORDS.c.version + 1, seal=bindparam("seal")), pruned)
        for fields, ids in blind_gone.items():
            for i in range(0, len(ids), _CHUNK):
                conn.execute(self._st.del_blind_fields, {"ids": self._st.ids(ids[i:i + _CHUNK]),
                                                         "fields": self._st.ids(_labels(fields))})
        if rescheduled:
            conn.execute(update(_RET).where(_RET.c.record_id == bindparam("rid")).values(
                expires_at=bindparam("exp"), category=bindparam("cat"),
                action=bindparam("act"), purge_at=bindparam("purge"),
                shred_at=bindparam("shred")), rescheduled)
        if anonymise:
            dropped = self._anonymise(conn, anonymise, now)
            counts["delete"] += dropped
            counts["anonymise"] -= dropped
        self._queue_shreds(conn, shred_flags, touched, info, report, now)
        events = []
        for tenant, t in sorted(touched.items()):
            events.append(AuditEvent(
                tenant=tenant, actor=self._actor, action="retention.sweep",
                decision=Decision.ALLOW, collection=None,
                record_ids=tuple(t["ids"]),
                subjects=self._pseudonyms_of(tenant, (s for s in t["subjects"]
                                                      if s != ANONYMOUS_SUBJECT)),
                fields=tuple(sorted(t["fields"])),
                reason=f"run:{report.run_id}:batch:{report.batches + 1}"))
        self._k.audit_log.append(conn, events)
        return counts

    def _prune(self, conn: Connection, items: list[tuple[Any, Outcome]],
               now: dt.datetime) -> tuple[list[dict[str, Any]], list[str]]:
        """The kept envelopes of each pruned record, sealed at its next version; and
        the records that must be deleted instead: their seal does not vouch for
        them (tampered: re-sealing would launder it) or their subject's key is gone
        (unreadable either way)."""
        k = self._k
        pruned: list[dict[str, Any]] = []
        unsealed: list[str] = []
        by_tenant: dict[str, list[tuple[Any, Outcome]]] = defaultdict(list)
        for row, out in items:
            by_tenant[row.tenant].append((row, out))
        for tenant, group in by_tenant.items():
            keys = k.keystore.get_keys(tenant, sorted({row.subject_id for row, _ in group}),
                                       missing_ok=True)
            for row, out in group:
                key = keys.get(row.subject_id)
                record = RecordContext(tenant, row.collection, row.record_id, row.subject_id)
                try:
                    if key is None:
                        raise NotFound("the data subject has no data key")
                    k.cipher.check_seal(key, row.seal, row.envelopes, record, row.version)
                except (CryptoError, NotFound):
                    log.warning("retention_record_unreadable", record_id=row.record_id)
                    unsealed.append(row.record_id)
                    continue
                envs = decode_envelopes(row.envelopes)
                framed = encode_envelopes({n: e for n, e in envs.items() if n in out.kept})
                pruned.append({"rid": row.record_id, "env": framed, "ts": now,
                               "seal": k.cipher.seal(key, framed, record, row.version + 1)})
        return pruned, unsealed

    def _anonymise(self, conn: Connection, items: list[tuple[Any, Outcome]],
                   now: dt.datetime) -> int:
        """Re-encrypt the kept fields under the tenant's anonymous key; returns how
        many records had to be deleted instead (their subject's key was gone)."""
        k = self._k
        by_tenant: dict[str, list[tuple[Any, Outcome]]] = defaultdict(list)
        for row, out in items:
            by_tenant[row.tenant].append((row, out))
        dropped = 0
        for tenant, group in by_tenant.items():
            anon = self._anonymous_key(conn, tenant, now)
            # The keys that can still be had (a lost one sends its records to deletion).
            keys = k.keystore.get_keys(tenant, sorted({row.subject_id for row, _ in group}),
                                           missing_ok=True)
            cipher = k.cipher
            updates, gone = [], []
            blind: dict[frozenset[str], list[str]] = defaultdict(list)
            for row, out in group:
                key = keys.get(row.subject_id)
                try:
                    if key is None:
                        raise NotFound("the data subject has no data key")
                    record = RecordContext(tenant, row.collection, row.record_id, row.subject_id)
                    cipher.check_seal(key, row.seal, row.envelopes, record, row.version)
                    plain, _ = cipher.decrypt_framed(key, row.envelopes, record, out.kept)
                    if len(plain) != len(out.kept):  # a kept field with no envelope
                        raise NotFound("a kept field has no envelope")
                    anonymous = RecordContext(tenant, row.collection, row.record_id,
                                              ANONYMOUS_SUBJECT)
                    fresh = cipher.encrypt_framed(
                        anon, {n: plain[n] for n in sorted(out.kept)}, anonymous)
                except (CryptoError, NotFound):
                    gone.append(row.record_id)
                    continue
                updates.append({"rid": row.record_id, "env": fresh, "ts": now,
                                "sid": ANONYMOUS_SUBJECT,
                                "seal": cipher.seal(anon, fresh, anonymous, row.version + 1)})
                if out.removed:
                    blind[out.removed].append(row.record_id)
            ids = [u["rid"] for u in updates] + gone
            for i in range(0, len(ids), _CHUNK):
                conn.execute(self._st.del_ret, {"ids": self._st.ids(ids[i:i + _CHUNK])})
            for removed, with_removed in blind.items():
                # Only the fields each record loses: under another subject's regime
                # a field one record loses may be one another keeps.
                for i in range(0, len(with_removed), _CHUNK):
                    conn.execute(self._st.del_blind_fields, {
                        "ids": self._st.ids(with_removed[i:i + _CHUNK]),
                        "fields": self._st.ids(_labels(removed))})
            if updates:
                conn.execute(update(_RECORDS).where(_RECORDS.c.id == bindparam("rid")).values(
                    envelopes=bindparam("env"), updated_at=bindparam("ts"),
                    subject_id=bindparam("sid"), version=_RECORDS.c.version + 1,
                    seal=bindparam("seal")), updates)
            for i in range(0, len(gone), _CHUNK):
                conn.execute(self._st.del_blind, {"ids": self._st.ids(gone[i:i + _CHUNK])})
                conn.execute(self._st.del_records, {"ids": self._st.ids(gone[i:i + _CHUNK])})
            dropped += len(gone)
        return dropped

    def _anonymous_key(self, conn: Connection, tenant: str, now: dt.datetime) -> Any:
        k = self._k
        exists_row = conn.execute(select(_SUBJECTS.c.subject_id).where(
            _SUBJECTS.c.tenant == tenant, _SUBJECTS.c.subject_id == ANONYMOUS_SUBJECT)).first()
        if exists_row is None:
            conn.execute(insert(_SUBJECTS), [{
                "tenant": tenant, "subject_id": ANONYMOUS_SUBJECT,
                "pseudonym": k.pseudonym(tenant, ANONYMOUS_SUBJECT),
                "jurisdiction": None, "created_at": now}])
        if k.keystore.existing(tenant, [ANONYMOUS_SUBJECT]):
            return k.keystore.get_key(tenant, ANONYMOUS_SUBJECT)
        return k.keystore.create_keys(tenant, [ANONYMOUS_SUBJECT])[0]

    # ------------------------------------------------------------------ shredding

    def _queue_shreds(self, conn: Connection, flags: set[tuple[str, str]],
                      touched: dict[str, dict[str, Any]],
                      info: dict[tuple[str, str], SubjectInfo], report: SweepReport,
                      now: dt.datetime) -> None:
        """Queue for shredding the subjects due for it that have no record left; mark
        the others due (``shred_due``) so that their last record's removal queues them."""
        none = SubjectInfo("default")
        for tenant, t in touched.items():
            flagged = {s for s in t["subjects"] if (tenant, s) in flags}
            candidates = sorted(s for s in t["subjects"]
                                if s in flagged or info.get((tenant, s), none).shred_due)
            if not candidates:
                continue
            remaining: set[str] = set()
            for i in range(0, len(candidates), _CHUNK):
                remaining.update(conn.execute(self._st.remaining, {
                    "t": tenant, "ids": self._st.ids(candidates[i:i + _CHUNK])}).scalars())
            # One queue row for the batch's subjects of this tenant. A subject also
            # waiting in the per-subject queue (held when an earlier run shredded) is
            # taken off it when this row is shredded: it is shredded once.
            due = [s for s in candidates if s not in remaining]
            if due:
                batch_id = conn.execute(self._st.queue_batch, {
                    "t": tenant, "run": report.run_id, "now": now,
                    "subjects": json.dumps(due)}).scalar_one()
                self._queued_now[tenant] = (int(batch_id), due)
            mark = sorted(s for s in flagged & remaining
                          if not info.get((tenant, s), none).shred_due)
            self._mark_shred_due(conn, tenant, mark)

    @staticmethod
    def _mark_shred_due(conn: Connection, tenant: str, subjects: Sequence[str]) -> None:
        if not subjects:
            return
        have: set[str] = set()
        for i in range(0, len(subjects), _CHUNK):
            have.update(conn.execute(select(_EVENTS.c.subject_id).where(
                _EVENTS.c.tenant == tenant,
                _EVENTS.c.subject_id.in_(list(subjects[i:i + _CHUNK])))).scalars())
        if have:
            conn.execute(update(_EVENTS).where(
                _EVENTS.c.tenant == bindparam("t"), _EVENTS.c.subject_id == bindparam("s"))
                .values(shred_due=True), [{"t": tenant, "s": s} for s in sorted(have)])
        missing = [s for s in subjects if s not in have]
        if missing:
            conn.execute(insert(_EVENTS), [{"tenant": tenant, "subject_id": s,
                                            "shred_due": True} for s in missing])

    def _flush_shred_queue(self, report: SweepReport, *, run_id: str | None) -> None:
        """Destroy the data keys of queued subjects: all of them when ``run_id`` is
        None (what earlier runs left), else those this run queued (kept in memory).

        Per tenant, one transaction takes the batch rows and the per-subject rows
        off the queue (``DELETE ... RETURNING``: only those still there, so a
        concurrent sweeper never shreds or audits a subject twice), destroys the
        keys of the subjects no hold covers in the key store (committed first),
        moves the held ones to the per-subject queue, and audits the destruction;
        a crash before it commits leaves them all queued, and destruction is
        idempotent.
        """
        work: dict[str, tuple[list[int], list[str]]] = {}
        if run_id is None:
            batch_rows = select(_BATCHES.c.tenant, _BATCHES.c.id).order_by(_BATCHES.c.id)
            single_rows = select(_QUEUE.c.tenant, _QUEUE.c.subject_id)
            if self._tenant is not None:
                batch_rows = batch_rows.where(_BATCHES.c.tenant == self._tenant)
                single_rows = single_rows.where(_QUEUE.c.tenant == self._tenant)
            with self._tx() as conn:
                for row in conn.execute(batch_rows):
                    work.setdefault(row.tenant, ([], []))[0].append(int(row.id))
                for row in conn.execute(single_rows):
                    work.setdefault(row.tenant, ([], []))[1].append(row.subject_id)
        else:
            for tenant in set(self._pending_batches) | set(self._pending_held):
                ids, held = self._pending_batches[tenant], self._pending_held[tenant]
                if ids or held:
                    work[tenant] = (sorted(ids), sorted(held))
        for tenant, (batch_ids, singles) in sorted(work.items()):
            outcome = self._shred(report, tenant, batch_ids, singles)
            if outcome is None:
                continue  # the whole tenant is held: everything stays queued
            if run_id is None:
                continue
            # Every row passed is off the queue now (taken here or by a concurrent
            # sweeper); what stays pending is what a hold still covers.
            held = outcome
            mine = self._pending_batches[tenant]
            pending = self._pending[tenant]
            for batch_id in batch_ids:
                for sid in mine.pop(batch_id, ()):
                    if sid not in held:
                        pending.pop(sid, None)
            for sid in singles:
                if sid not in held:
                    pending.pop(sid, None)
            self._pending_held[tenant] = held
        self._pseudonyms.clear()

    def _shred(self, report: SweepReport, tenant: str, batch_ids: list[int],
               singles: list[str]) -> set[str] | None:
        """Shred the subjects of these queue rows of one tenant (batch rows by id, and
        per-subject rows) unless held. Returns None if a tenant-wide hold applies
        (nothing is taken), else the subjects still queued because a hold covers them."""
        now = self._k.clock.now()
        with self._tx() as conn:
            lock_tenants(conn, [tenant])
            held_rows = conn.execute(select(_HOLDS.c.subject_id).where(
                _HOLDS.c.tenant == tenant, active_hold_clause(now))).all()
            if any(h.subject_id is None for h in held_rows):
                return None
            held = {h.subject_id for h in held_rows}
            listed: dict[str, None] = {}
            for i in range(0, len(batch_ids), 500):
                for subjects in conn.execute(self._st.take_batches, {
                        "ids": batch_ids[i:i + 500]}).scalars():
                    listed.update(dict.fromkeys(json.loads(subjects)))
            from_batches = [s for s in listed if s not in held]
            # Per-subject rows to take: this run's held ones now free, and any subject
            # of the batch rows that also waits there (only looked for if any waits).
            wanted = [s for s in singles if s not in held and s not in listed]
            if conn.execute(self._st.queued_any, {"t": tenant}).first() is not None:
                wanted.extend(from_batches)
            taken: dict[str, None] = dict.fromkeys(from_batches)
            for i in range(0, len(wanted), _CHUNK):
                taken.update(dict.fromkeys(conn.execute(self._st.dequeue, {
                    "t": tenant, "ids": self._st.ids(wanted[i:i + _CHUNK])}).scalars()))
            stay = sorted(s for s in listed if s in held)
            for i in range(0, len(stay), _CHUNK):
                conn.execute(self._st.enqueue, {"t": tenant, "ids": self._st.ids(
                    stay[i:i + _CHUNK]), "now": now, "run": report.run_id})
            # A subject that got a new record while it waited (held) lives again:
            # it leaves the queue, and its new record's expiry brings it back.
            alive: set[str] = set()
            candidates = list(taken)
            for i in range(0, len(candidates), _CHUNK):
                alive.update(conn.execute(self._st.remaining, {
                    "t": tenant, "ids": self._st.ids(candidates[i:i + _CHUNK])}).scalars())
            shredded = [s for s in taken if s not in alive]
            if shredded:
                self._k.keystore.destroy_many(tenant, shredded, checkpoint=False)
                for i in range(0, len(shredded), _CHUNK):
                    conn.execute(self._st.forget_events, {
                        "t": tenant, "ids": self._st.ids(shredded[i:i + _CHUNK])})
                # The erasure markers, which a restored key store cannot undo.
                mark_erased(conn, tenant, {s: self._pseudonym(tenant, s) for s in shredded},
                            action="retention.shred", now=now)
                self._k.audit_log.append(conn, [AuditEvent(
                    tenant=tenant, actor=self._actor, action="retention.shred",
                    decision=Decision.ALLOW,
                    subjects=self._pseudonyms_of(tenant, shredded),
                    reason=f"run:{report.run_id}:subjects:{len(shredded)}")])
                conn.execute(update(_RUNS).where(_RUNS.c.id == report.run_id).values(
                    subjects_shredded=_RUNS.c.subjects_shredded + len(shredded)))
        report.subjects_shredded += len(shredded)
        return set(stay) | {s for s in singles if s in held}

    # ------------------------------------------------------------------ dry run

    def _simulate(self, report: SweepReport, total: int, progress: Progress | None) -> None:
        after: tuple[Any, str] | None = None
        done = 0
        while True:
            with self._engine.connect() as conn:
                rows = self._select(conn, report.cutoff, after=after, for_update=False)
                if not rows:
                    conn.rollback()
                    break
                outcomes, _ = self._outcomes(conn, rows, report.cutoff)
                conn.rollback()
            for _, out in outcomes:
                if out.kind == "delete":
                    report.records_deleted += 1
                elif out.kind == "prune":
                    report.records_pruned += 1
                elif out.kind == "anonymise":
                    report.records_anonymised += 1
            report.batches += 1
            last = rows[-1]
            after = (last.expires_at, last.record_id)
            done += len(rows)
            if progress is not None:
                progress(min(done, total), max(total, done))
