"""``v.retention``: the schedule, events that move expiry, plans, sweeps and reports."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from vault._kernel import Kernel
from vault.audit.chain import AuditEvent, Decision
from vault.crypto.framing import decode_envelopes
from vault.errors import InvalidData, NotFound
from vault.retention import expiry as _expiry
from vault.retention.holdrules import active_hold_clause
from vault.retention.schedule import (
    SUBJECT_EVENTS,
    Event,
    RetentionSchedule,
    record_expiries,
)
from vault.retention.sweeper import Progress, Sweeper, SweepReport
from vault.schema import CollectionSchema
from vault.store.retry import transaction_attempts
from vault.store.tables import LEGAL_HOLDS as _HOLDS
from vault.store.tables import RECORDS as _RECORDS
from vault.store.tables import RETENTION as _RET
from vault.store.tables import RETENTION_RUNS as _RUNS
from vault.store.tables import RETENTION_SUBJECTS as _EVENTS
from vault.store.tables import SUBJECTS as _SUBJECTS
from vault.types import SYSTEM_ACTOR, Actor, actor_id, check_identifier, check_tenant

__all__ = ["PlanEntry", "RetentionPlan", "RetentionReport", "RetentionService", "RunSummary"]

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


class RetentionService:
    """Retention on an open vault (``v.retention``).

    Authorisation, when an ``actor`` is given (the default policy in
    parentheses): ``retention.event`` to record events (crm_service, dpo),
    ``retention.read`` for plans and reports (admin, dpo, compliance_officer),
    ``retention.run`` to sweep (admin, dpo). Without an actor, the caller is
    the local operator (``system``).

    It implements the data path's, the subjects' and the consent ledger's hooks
    (:mod:`vault._kernel.hooks`): every write keeps the expiries in step in its
    own transaction.
    """

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel
        self._schedule = kernel.rules.schedule

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
        rules = self._k.rules
        return _expiry.fingerprint(self._schedule, rules.schemas, rules.jurisdictions)

    def _refresh_expiries(self, actor: Actor | None) -> int:
        """If the schedule, the schemas' categories or the jurisdiction map changed
        since the stored expiries were computed (a restart with an edited
        ``retention.toml``, say), recompute every record's expiry, in batches,
        then record the new fingerprint with an audit entry
        (``retention.recompute``). Returns how many records were recomputed.
        Idempotent: a run that dies midway is redone by the next."""
        k = self._k
        wanted = self.fingerprint()
        with k.read_only() as conn:
            stored = _expiry.stored_fingerprint(conn)
        if stored == wanted:
            return 0
        count = _expiry.recompute_all(k.engine, self._schedule, k.rules.schemas,
                                      regime_for=k.rules.jurisdictions.regime_for)
        for attempt in transaction_attempts():
            with attempt, k.engine.begin() as conn:
                if _expiry.stored_fingerprint(conn) == wanted:
                    break  # another process recorded it meanwhile
                _expiry.store_fingerprint(conn, wanted, k.clock.now())
                k.audit_log.append(conn, [k.event(
                    "retention.recompute", actor=actor,
                    reason=f"schedule_changed:records:{count}")])
        return count

    # ------------------------------------------------------------------ hooks

    def records_inserted(self, conn: Connection, tenant: str, schema: CollectionSchema,
                         record_rows: Sequence[Mapping[str, Any]],
                         values: Sequence[Mapping[str, Any]], new_subjects: Iterable[str],
                         jurisdiction: str | None) -> None:
        """Called by ``put_many`` inside its transaction: the new records' expiries."""
        _expiry.rows_for_insert(
            conn, self._schedule, tenant, schema,
            [(row["id"], row["subject_id"], row["created_at"],
              [n for n, x in value.items() if x is not None])
             for row, value in zip(record_rows, values, strict=True)],
            new_subjects=new_subjects, jurisdiction=jurisdiction,
            regime_for=self._k.rules.jurisdictions.regime_for)

    def records_updated(self, conn: Connection, tenant: str,
                        record_ids: Sequence[str]) -> None:
        """Called by ``update`` inside its transaction (fields may have come or gone)."""
        _expiry.recompute(conn, self._schedule, self._k.rules.schemas, tenant,
                          record_ids=record_ids,
                          regime_for=self._k.rules.jurisdictions.regime_for)

    def subject_changed(self, conn: Connection, tenant: str, subject_id: str) -> None:
        """Called inside the transaction that changed a subject's jurisdiction."""
        _expiry.recompute(conn, self._schedule, self._k.rules.schemas, tenant,
                          subject_id=subject_id,
                          regime_for=self._k.rules.jurisdictions.regime_for)

    def consent_withdrawn(self, conn: Connection, tenant: str, subject_id: str,
                          purpose: str, at: dt.datetime, actor: Actor | None) -> None:
        """Called in the transaction that records a withdrawal of consent to
        ``purpose``, when the subject's profile sets ``erase_on_withdrawal`` (PIPL
        Art. 47(1)(3)): the withdrawal and the deletion it queues commit together.

        Queues proactive deletion: the withdrawal is recorded as the subject's
        ``consent_withdrawn`` retention event, which makes the categories whose
        rules run from it (e.g. ``marketing``, deleted at once) expire, and the
        next retention sweep deletes them (legal holds still apply). Idempotent.
        """
        self._apply_event(conn, tenant, subject_id, Event.CONSENT_WITHDRAWN,
                          at.astimezone(dt.UTC), actor, "retention.event")

    def consent_regranted(self, conn: Connection, tenant: str, subject_id: str,
                          purpose: str, actor: Actor | None) -> None:
        """Called in the transaction that records a general consent under a profile
        with ``erase_on_withdrawal``, once no general consent of the subject is left
        withdrawn: the deletion an earlier withdrawal queued is called off (the
        ``consent_withdrawn`` event is cleared)."""
        self._apply_event(conn, tenant, subject_id, Event.CONSENT_WITHDRAWN, None, actor,
                          "retention.event_clear")

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
        check_tenant(tenant)
        kind = self._event(event)
        check_identifier(subject_id, "subject_id")
        if at is not None and (not isinstance(at, dt.datetime) or at.tzinfo is None):
            raise InvalidData("at must be an aware datetime", field="at")
        self._k.authorise(actor, "retention", "retention.event", tenant=tenant)
        when = (at or self._k.clock.now()).astimezone(dt.UTC)
        return self._set_event(tenant, subject_id, kind, when, actor, "retention.event")

    def clear_event(self, tenant: str, subject_id: str, event: Event | str, *,
                    actor: Actor | None = None) -> int:
        """Forget an event (a contract renewed, consent given again) and recompute.

        Raises:
            InvalidData, NotFound, AccessDenied: as :meth:`record_event`.
        """
        check_tenant(tenant)
        kind = self._event(event)
        check_identifier(subject_id, "subject_id")
        self._k.authorise(actor, "retention", "retention.event", tenant=tenant)
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
        k = self._k
        for attempt in transaction_attempts():
            with attempt, k.engine.begin() as conn:
                count = self._apply_event(conn, tenant, subject_id, kind, when, actor, action)
        return count

    def _apply_event(self, conn: Connection, tenant: str, subject_id: str, kind: Event,
                     when: dt.datetime | None, actor: Actor | None, action: str) -> int:
        k = self._k
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
        count = _expiry.recompute(conn, self._schedule, k.rules.schemas, tenant,
                                  subject_id=subject_id,
                                  regime_for=k.rules.jurisdictions.regime_for)
        k.audit_log.append(conn, [AuditEvent(
            tenant=tenant, actor=actor_id(actor), action=action,
            decision=Decision.ALLOW, subjects=(k.pseudonym(tenant, subject_id),),
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
        now = self._k.clock.now()
        if until is not None and (not isinstance(until, dt.datetime) or until.tzinfo is None):
            raise InvalidData("until must be an aware datetime", field="until")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10**9:
            raise InvalidData("limit must be a positive integer", field="limit")
        if tenant is not None:
            check_tenant(tenant)
        self._k.authorise(actor, "retention", "retention.read", tenant=tenant or "*")
        self._refresh_expiries(actor)
        horizon = until or now
        cond = [_RET.c.expires_at.is_not(None), _RET.c.expires_at <= horizon]
        if tenant is not None:
            cond.append(_RET.c.tenant == tenant)
        k = self._k
        with k.engine.connect() as conn:
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
                        regime_for=k.rules.jurisdictions.regime_for).items():
                    info[(t, sid)] = si
            conn.rollback()
        whole = {h.tenant for h in holds if h.subject_id is None}
        held_subjects = {(h.tenant, h.subject_id) for h in holds}
        entries: list[PlanEntry] = []
        default = _expiry.SubjectInfo(regime="default")
        for r in rows:
            schema = k.rules.schemas.get(r.collection)
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
        k.audit("retention.plan", actor=actor, tenant=tenant or "*",
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
        if tenant is not None:
            check_tenant(tenant)
        self._k.authorise(actor, "retention", "retention.run", tenant=tenant or "*")
        self._refresh_expiries(actor)
        sweeper = Sweeper(self._k, batch_size=batch_size, tenant=tenant,
                          actor=actor_id(actor))
        return sweeper.run(dry_run=dry_run, progress=progress)

    # ------------------------------------------------------------------ history and report

    def runs(self, *, limit: int = 20, run_id: str | None = None,
             tenant: str | None = None) -> list[RunSummary]:
        """The latest sweeps, newest first (or the one with ``run_id``); with ``tenant``,
        only the sweeps limited to that tenant (a sweep of every tenant counts the
        other tenants' records too, so it is not listed there)."""
        if tenant is not None:
            check_tenant(tenant)
        query = select(_RUNS).order_by(_RUNS.c.started_at.desc(), _RUNS.c.id).limit(limit)
        if run_id is not None:
            query = query.where(_RUNS.c.id == run_id)
        if tenant is not None:
            query = query.where(_RUNS.c.tenant == tenant)
        with self._k.engine.connect() as conn:
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
        if tenant is not None:
            check_tenant(tenant)
        self._k.authorise(actor, "retention", "retention.read", tenant=tenant or "*")
        self._refresh_expiries(actor)
        now = self._k.clock.now()
        sweeper = Sweeper(self._k, batch_size=1, actor=SYSTEM_ACTOR, tenant=tenant)
        scope = [] if tenant is None else [_RET.c.tenant == tenant]
        upcoming: dict[int, dict[tuple[str, str], int]] = {}
        with self._k.engine.connect() as conn:
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
        self._k.audit("retention.report", actor=actor, tenant=tenant or "*",
                                 reason="summary")
        return RetentionReport(generated_at=now, expired_unheld=free, expired_held=held,
                               waiting=waiting, upcoming=upcoming, active_holds=holds,
                               runs=tuple(self.runs(limit=runs, tenant=tenant)))
