"""``v.retention``: the schedule, events that move expiry, plans, sweeps and reports."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ColumnElement, Connection, Table, func, insert, select, update

from vault.admin import _Service
from vault.audit.chain import AuditEvent, Decision
from vault.errors import InvalidData, NotFound
from vault.retention import expiry as _expiry
from vault.retention.holds import active_hold_clause
from vault.retention.schedule import (
    SUBJECT_EVENTS,
    Event,
    RetentionSchedule,
    load_schedule,
    record_expiries,
)
from vault.retention.sweeper import Progress, Sweeper, SweepReport
from vault.retention.tables import (
    LegalHoldRow,
    RetentionFingerprintRow,
    RetentionRow,
    RetentionRunRow,
    RetentionSubjectRow,
)
from vault.schema import CollectionSchema
from vault.store.codec import decode_envelopes
from vault.store.models import RecordRow, SubjectRow
from vault.store.retry import transaction_attempts
from vault.types import Actor, check_identifier

if TYPE_CHECKING:
    from vault.facade import Vault

__all__ = ["PlanEntry", "RetentionPlan", "RetentionReport", "RetentionService", "RunSummary"]

_RET = cast(Table, RetentionRow.__table__)
_RUNS = cast(Table, RetentionRunRow.__table__)
_EVENTS = cast(Table, RetentionSubjectRow.__table__)
_HOLDS = cast(Table, LegalHoldRow.__table__)
_RECORDS = cast(Table, RecordRow.__table__)
_SUBJECTS = cast(Table, SubjectRow.__table__)
_FINGERPRINTS = cast(Table, RetentionFingerprintRow.__table__)

#: Windows (days ahead) of the report's "upcoming" section.
REPORT_WINDOWS = (7, 30, 90, 365)


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """One category of one record that expires by the plan's horizon."""

    expires_at: dt.datetime
    tenant: str
    collection: str
    record_id: str
    subject_id: str
    category: str
    action: str
    fields: tuple[str, ...]
    basis: str
    held: bool


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """What would go, and when, up to ``until`` (``entries`` sorted by time)."""

    generated_at: dt.datetime
    until: dt.datetime
    entries: tuple[PlanEntry, ...]
    records: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One row of the sweep history."""

    id: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    status: str
    dry_run: bool
    actor: str
    batches: int
    records_deleted: int
    records_pruned: int
    records_anonymised: int
    subjects_shredded: int
    held: int
    #: The tenant the run was limited to; None: every tenant (or a run from before 0004).
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """The retention summary for DPOs: backlog, upcoming deletions, holds, last runs.

    ``upcoming`` maps a window in days to counts of records whose next expiry
    falls in it, by (category, action). ``waiting`` counts records whose
    periods have not started (e.g. no contract end recorded yet).
    """

    generated_at: dt.datetime
    expired_unheld: int
    expired_held: int
    waiting: int
    upcoming: Mapping[int, Mapping[tuple[str, str], int]]
    active_holds: int
    runs: tuple[RunSummary, ...] = field(default=())


class RetentionService(_Service):
    """Retention on an open vault (``v.retention``).

    Authorisation, when an ``actor`` is given (the default policy in
    parentheses): ``retention.event`` to record events (crm_service, dpo),
    ``retention.read`` for plans and reports (admin, dpo, compliance_officer),
    ``retention.run`` to sweep (admin, dpo). Without an actor, the caller is
    the local operator (``system``).
    """

    def __init__(self, vault: Vault) -> None:
        super().__init__(vault)
        self._schedule = load_schedule(vault.settings.resolved_policies / "retention.toml",
                                       vault.schemas)

    @property
    def schedule(self) -> RetentionSchedule:
        return self._schedule

    # ------------------------------------------------------------------ schedule changes

    def fingerprint(self) -> str:
        """SHA-256 of everything a stored expiry is computed from: the schedule's
        rules, each field's category and classification, and which regime each
        jurisdiction code falls under (all loaded once, so computed once)."""
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        schedule, vault = self._schedule, self._vault
        registry = vault.jurisdictions
        doc = {
            "rules": {cat: {reg: [[str(r.period), r.from_event.value, r.action.value]
                                  for r in schedule.rules(cat, reg)]
                            for reg in schedule.regimes(cat)}
                      for cat in schedule.categories},
            "fields": sorted([name, f.name, f.category, f.classification.value]
                             for name in vault.schemas.names
                             for f in vault.schemas.get(name).fields.values()),
            "regimes": sorted([code, regime] for regime in registry.regimes
                              for code in registry.profile(regime).jurisdictions),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def _store_fingerprint(self, conn: Connection, value: str) -> None:
        conn.execute(insert(_FINGERPRINTS), [{"recorded_at": self._vault.clock.now(),
                                              "fingerprint": value}])

    @staticmethod
    def _stored_fingerprint(conn: Connection) -> str | None:
        return conn.execute(select(_FINGERPRINTS.c.fingerprint)
                            .order_by(_FINGERPRINTS.c.id.desc()).limit(1)).scalar_one_or_none()

    def _refresh_expiries(self, actor: Actor | None) -> int:
        """If the schedule, the schemas' categories or the jurisdiction map changed
        since the stored expiries were computed (a restart with an edited
        ``retention.toml``, say), recompute every record's expiry, in batches,
        then record the new fingerprint with an audit entry
        (``retention.recompute``). Returns how many records were recomputed.
        Idempotent: a run that dies midway is redone by the next."""
        vault = self._vault
        wanted = self.fingerprint()
        with vault.engine.connect() as conn:
            stored = self._stored_fingerprint(conn)
            conn.rollback()
        if stored == wanted:
            return 0
        count = self._recompute_all()
        for attempt in transaction_attempts():
            with attempt, vault.engine.begin() as conn:
                if self._stored_fingerprint(conn) == wanted:
                    break  # another process recorded it meanwhile
                self._store_fingerprint(conn, wanted)
                vault.audit_log.append(conn, [AuditEvent(
                    tenant=actor.tenant if actor else "*",
                    actor=actor.id if actor else "system",
                    action="retention.recompute", decision=Decision.ALLOW,
                    reason=f"schedule_changed:records:{count}")])
        return count

    # ------------------------------------------------------------------ data path hooks

    def _on_insert(self, conn: Connection, tenant: str, schema: CollectionSchema,
                   record_rows: Sequence[Mapping[str, Any]],
                   values: Sequence[Mapping[str, Any]], new_subjects: Iterable[str],
                   jurisdiction: str | None) -> None:
        """Called by ``put_many`` inside its transaction."""
        _expiry.rows_for_insert(
            conn, self._schedule, tenant, schema,
            [(row["id"], row["subject_id"], row["created_at"],
              [n for n, x in value.items() if x is not None])
             for row, value in zip(record_rows, values, strict=True)],
            new_subjects=new_subjects, jurisdiction=jurisdiction,
            regime_for=self._vault.jurisdictions.regime_for)

    def _on_update(self, conn: Connection, tenant: str, record_ids: Sequence[str]) -> None:
        """Called by ``update`` inside its transaction (fields may have come or gone)."""
        _expiry.recompute(conn, self._schedule, self._vault.schemas, tenant,
                          record_ids=record_ids,
                          regime_for=self._vault.jurisdictions.regime_for)

    def _on_subject_changed(self, conn: Connection, tenant: str, subject_id: str) -> None:
        """Called inside the transaction that changed a subject's jurisdiction."""
        _expiry.recompute(conn, self._schedule, self._vault.schemas, tenant,
                          subject_id=subject_id,
                          regime_for=self._vault.jurisdictions.regime_for)

    # ------------------------------------------------------------------ events

    def record_event(self, tenant: str, subject_id: str, event: Event | str,
                     at: dt.datetime | None = None, *, actor: Actor | None = None) -> int:
        """Record that an event happened to a subject, and recompute its records' expiry.

        Args:
            event: ``last_interaction`` (kept only if later than the one recorded),
                ``contract_end`` (may be in the future) or ``consent_withdrawn``.
            at: when (aware datetime); now if None.

        Returns:
            How many records were recomputed.

        Raises:
            InvalidData: an unknown event or a naive time.
            NotFound: the subject is unknown in this tenant.
            AccessDenied: ``actor`` may not record retention events (audited).
        """
        kind = self._event(event)
        check_identifier(subject_id, "subject_id")
        if at is not None and (not isinstance(at, dt.datetime) or at.tzinfo is None):
            raise InvalidData("at must be an aware datetime", field="at")
        self._authorise(actor, "retention", "retention.event", tenant=tenant)
        when = (at or self._vault.clock.now()).astimezone(dt.UTC)
        return self._set_event(tenant, subject_id, kind, when, actor, "retention.event")

    def clear_event(self, tenant: str, subject_id: str, event: Event | str, *,
                    actor: Actor | None = None) -> int:
        """Forget an event (a contract renewed, consent given again) and recompute.

        Raises:
            InvalidData, NotFound, AccessDenied: as :meth:`record_event`.
        """
        kind = self._event(event)
        check_identifier(subject_id, "subject_id")
        self._authorise(actor, "retention", "retention.event", tenant=tenant)
        return self._set_event(tenant, subject_id, kind, None, actor, "retention.event_clear")

    @staticmethod
    def _event(event: Event | str) -> Event:
        try:
            kind = Event(event)
        except ValueError:
            kind = None
        if kind is None or kind not in SUBJECT_EVENTS:
            raise InvalidData("event must be one of "
                              + ", ".join(e.value for e in SUBJECT_EVENTS), field="event")
        return kind

    def _set_event(self, tenant: str, subject_id: str, kind: Event, when: dt.datetime | None,
                   actor: Actor | None, action: str) -> int:
        vault = self._vault
        for attempt in transaction_attempts():
            with attempt, vault.engine.begin() as conn:
                count = self._apply_event(conn, tenant, subject_id, kind, when, actor, action)
        return count

    def _apply_event(self, conn: Connection, tenant: str, subject_id: str, kind: Event,
                     when: dt.datetime | None, actor: Actor | None, action: str) -> int:
        vault = self._vault
        column = kind.value
        known = conn.execute(select(_SUBJECTS.c.subject_id).where(
            _SUBJECTS.c.tenant == tenant, _SUBJECTS.c.subject_id == subject_id)).first()
        if known is None:
            raise NotFound(f"no subject {subject_id} in tenant {tenant}")
        row = conn.execute(select(_EVENTS).where(
            _EVENTS.c.tenant == tenant, _EVENTS.c.subject_id == subject_id)).first()
        if row is None:
            conn.execute(insert(_EVENTS), [{"tenant": tenant, "subject_id": subject_id,
                                            column: when, "shred_due": False}])
        else:
            current = getattr(row, column)
            if kind is Event.LAST_INTERACTION and when is not None and current is not None:
                when = max(when, current)
            conn.execute(update(_EVENTS).where(
                _EVENTS.c.tenant == tenant, _EVENTS.c.subject_id == subject_id)
                .values({column: when}))
        count = _expiry.recompute(conn, self._schedule, vault.schemas, tenant,
                                  subject_id=subject_id,
                                  regime_for=vault.jurisdictions.regime_for)
        vault.audit_log.append(conn, [AuditEvent(
            tenant=tenant, actor=actor.id if actor else "system", action=action,
            decision=Decision.ALLOW, subjects=(vault.pseudonym(tenant, subject_id),),
            reason=f"{column}:records:{count}")])
        return count

    # ------------------------------------------------------------------ plan

    def plan(self, *, until: dt.datetime | None = None, tenant: str | None = None,
             limit: int = 10_000, actor: Actor | None = None) -> RetentionPlan:
        """What the sweeper would remove, category by category, up to ``until``.

        Args:
            until: the horizon (aware); now if None (what a sweep would do now).
            limit: at most this many records are detailed (``truncated`` says so).

        Raises:
            InvalidData: a naive ``until`` or a bad limit.
            AccessDenied: ``actor`` may not read retention (audited).
        """
        now = self._vault.clock.now()
        if until is not None and (not isinstance(until, dt.datetime) or until.tzinfo is None):
            raise InvalidData("until must be an aware datetime", field="until")
        if not isinstance(limit, int) or limit < 1:
            raise InvalidData("limit must be a positive integer", field="limit")
        self._authorise(actor, "retention", "retention.read", tenant=tenant or "*")
        self._refresh_expiries(actor)
        horizon = until or now
        cond = [_RET.c.expires_at.is_not(None), _RET.c.expires_at <= horizon]
        if tenant is not None:
            cond.append(_RET.c.tenant == tenant)
        vault = self._vault
        with vault.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(_RET).where(*cond))
                        .scalar_one())
            rows = conn.execute(
                select(_RET.c.record_id, _RET.c.tenant, _RECORDS.c.subject_id,
                       _RECORDS.c.collection, _RECORDS.c.envelopes, _RECORDS.c.created_at)
                .select_from(_RET.join(_RECORDS, _RECORDS.c.id == _RET.c.record_id))
                .where(*cond).order_by(_RET.c.expires_at, _RET.c.record_id).limit(limit)).all()
            holds = conn.execute(select(_HOLDS.c.tenant, _HOLDS.c.subject_id)
                                 .where(active_hold_clause(now))).all()
            info: dict[tuple[str, str], _expiry.SubjectInfo] = {}
            for t in {r.tenant for r in rows}:
                for sid, si in _expiry.subject_info(
                        conn, t, [r.subject_id for r in rows if r.tenant == t],
                        regime_for=vault.jurisdictions.regime_for).items():
                    info[(t, sid)] = si
            conn.rollback()
        whole = {h.tenant for h in holds if h.subject_id is None}
        held_subjects = {(h.tenant, h.subject_id) for h in holds}
        entries: list[PlanEntry] = []
        default = _expiry.SubjectInfo(regime="default")
        for r in rows:
            schema = vault.schemas.get(r.collection)
            fields = decode_envelopes(r.envelopes)
            si = info.get((r.tenant, r.subject_id), default)
            exps = record_expiries(self._schedule, schema, fields, si.regime,
                                   si.events(r.created_at))
            held = r.tenant in whole or (r.tenant, r.subject_id) in held_subjects
            for category, exp in exps.items():
                if exp is None or exp.expires_at > horizon:
                    continue
                entries.append(PlanEntry(
                    expires_at=exp.expires_at, tenant=r.tenant, collection=r.collection,
                    record_id=r.record_id, subject_id=r.subject_id, category=category,
                    action=exp.action.value,
                    fields=tuple(sorted(n for n in fields
                                        if schema.fields[n].category == category)),
                    basis=exp.rule.basis, held=held))
        entries.sort(key=lambda e: (e.expires_at, e.record_id, e.category))
        vault._audit_admin("retention.plan", actor=actor, tenant=tenant or "*",
                           reason=f"records:{total}")
        return RetentionPlan(generated_at=now, until=horizon, entries=tuple(entries),
                             records=total, truncated=total > len(rows))

    # ------------------------------------------------------------------ sweep

    def sweep(self, *, dry_run: bool = False, batch_size: int = 1000, tenant: str | None = None,
              actor: Actor | None = None, progress: Progress | None = None) -> SweepReport:
        """Remove what has expired (see :mod:`vault.retention.sweeper`).

        Idempotent and crash-safe: run it on a schedule; after an interruption
        the next run finishes the job. Held data is skipped and counted.

        Args:
            dry_run: count what would be done; change nothing (the run is still
                recorded and audited).
            batch_size: records per transaction (and per audit entry).
            tenant: only this tenant.
            progress: called with (done, total) after each batch.

        Raises:
            InvalidData: a bad batch size.
            AccessDenied: ``actor`` may not run retention (audited).
        """
        if not isinstance(batch_size, int) or not 1 <= batch_size <= 100_000:
            raise InvalidData("batch_size must be between 1 and 100000", field="batch_size")
        self._authorise(actor, "retention", "retention.run", tenant=tenant or "*")
        self._refresh_expiries(actor)
        sweeper = Sweeper(self._vault, batch_size=batch_size, tenant=tenant,
                          actor=actor.id if actor else "system")
        return sweeper.run(dry_run=dry_run, progress=progress)

    # ------------------------------------------------------------------ history and report

    def runs(self, *, limit: int = 20, run_id: str | None = None,
             tenant: str | None = None) -> list[RunSummary]:
        """The latest sweeps, newest first (or the one with ``run_id``); with ``tenant``,
        only the sweeps limited to that tenant (a sweep of every tenant counts the
        other tenants' records too, so it is not listed there)."""
        query = select(_RUNS).order_by(_RUNS.c.started_at.desc(), _RUNS.c.id).limit(limit)
        if run_id is not None:
            query = query.where(_RUNS.c.id == run_id)
        if tenant is not None:
            query = query.where(_RUNS.c.tenant == tenant)
        with self._vault.engine.connect() as conn:
            rows = conn.execute(query).all()
            conn.rollback()
        return [RunSummary(id=r.id, started_at=r.started_at, finished_at=r.finished_at,
                           status=r.status, dry_run=bool(r.dry_run), actor=r.actor,
                           batches=int(r.batches), records_deleted=int(r.records_deleted),
                           records_pruned=int(r.records_pruned),
                           records_anonymised=int(r.records_anonymised),
                           subjects_shredded=int(r.subjects_shredded), held=int(r.held),
                           tenant=r.tenant)
                for r in rows]

    def run(self, run_id: str) -> RunSummary:
        """One sweep's record (its run report).

        Raises:
            NotFound: no such run.
        """
        found = self.runs(limit=1, run_id=run_id)
        if not found:
            raise NotFound(f"no retention run {run_id}")
        return found[0]

    def report(self, *, runs: int = 10, tenant: str | None = None,
               actor: Actor | None = None) -> RetentionReport:
        """The retention summary (upcoming deletions by window, backlog, holds, last runs),
        of one tenant or (``tenant`` None, operators only) of all.

        Raises:
            AccessDenied: ``actor`` may not read retention in the tenant (audited).
        """
        self._authorise(actor, "retention", "retention.read", tenant=tenant or "*")
        self._refresh_expiries(actor)
        now = self._vault.clock.now()
        sweeper = Sweeper(self._vault, batch_size=1, actor="system", tenant=tenant)
        scope = [] if tenant is None else [_RET.c.tenant == tenant]
        upcoming: dict[int, dict[tuple[str, str], int]] = {}
        with self._vault.engine.connect() as conn:
            free, held = sweeper.count(conn, now)
            waiting = int(conn.execute(select(func.count()).select_from(_RET)
                                       .where(_RET.c.expires_at.is_(None), *scope))
                          .scalar_one())
            for days in REPORT_WINDOWS:
                rows = conn.execute(
                    select(_RET.c.category, _RET.c.action, func.count())
                    .where(_RET.c.expires_at > now,
                           _RET.c.expires_at <= now + dt.timedelta(days=days), *scope)
                    .group_by(_RET.c.category, _RET.c.action)).all()
                upcoming[days] = {(str(c), str(a)): int(n) for c, a, n in rows}
            holds = int(conn.execute(
                select(func.count()).select_from(_HOLDS).where(
                    active_hold_clause(now),
                    *([] if tenant is None else [_HOLDS.c.tenant == tenant]))).scalar_one())
            conn.rollback()
        self._vault._audit_admin("retention.report", actor=actor, tenant=tenant or "*",
                                 reason="summary")
        return RetentionReport(generated_at=now, expired_unheld=free, expired_held=held,
                               waiting=waiting, upcoming=upcoming, active_holds=holds,
                               runs=tuple(self.runs(limit=runs, tenant=tenant)))

    def _backfill(self) -> int:
        """Give every record that has no expiry row one (records written before the
        retention schema existed, i.e. by a vault upgraded past migration 0003).

        Runs in batches, each in its own transaction; returns how many were added.
        """
        ret = _expiry._RET
        return self._recompute_all(
            ~select(ret.c.record_id).where(ret.c.record_id == _RECORDS.c.id).exists())

    def _recompute_all(self, *where: ColumnElement[bool]) -> int:
        """Recompute the expiry of every record (but anonymised ones) that matches
        ``where``, in batches by id, each in a transaction of its own (retried);
        returns how many were recomputed."""
        vault = self._vault
        after, count = "", 0
        while True:
            for attempt in transaction_attempts():
                with attempt, vault.engine.begin() as conn:
                    rows = conn.execute(
                        select(_RECORDS.c.tenant, _RECORDS.c.id)
                        .where(_RECORDS.c.subject_id != _expiry.ANONYMOUS_SUBJECT,
                               _RECORDS.c.id > after, *where)
                        .order_by(_RECORDS.c.id).limit(_expiry._CHUNK)).all()
                    by_tenant: dict[str, list[str]] = {}
                    for row in rows:
                        by_tenant.setdefault(row.tenant, []).append(row.id)
                    done = sum(_expiry.recompute(conn, self._schedule, vault.schemas, tenant,
                                                 record_ids=ids,
                                                 regime_for=vault.jurisdictions.regime_for)
                               for tenant, ids in by_tenant.items())
            if not rows:
                return count
            count += done
            after = rows[-1].id
