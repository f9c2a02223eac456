"""Per-record expiry: computed on every write, recomputed when an event moves.

The facade calls :func:`rows_for_insert` inside ``put_many``'s transaction
(one ``executemany``, no per-record query) and :func:`recompute` inside
``update``'s; :meth:`RetentionService.record_event` calls :func:`recompute`
for every record of the subject.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, delete, insert, select

from vault.crypto.framing import decode_envelopes
from vault.jurisdiction import JurisdictionRegistry
from vault.retention._regime import DEFAULT_REGIME, RegimeOf
from vault.retention.schedule import (
    Action,
    CategoryExpiry,
    RetentionSchedule,
    SubjectEvents,
    identifying,
    record_expiries,
)
from vault.schema import CollectionSchema, SchemaRegistry
from vault.store.bulk import BulkInsert
from vault.store.retry import transaction_attempts
from vault.store.tables import RECORDS as _RECORDS
from vault.store.tables import RETENTION as _RET
from vault.store.tables import RETENTION_FINGERPRINTS as _FINGERPRINTS
from vault.store.tables import RETENTION_SUBJECTS as _EVENTS
from vault.store.tables import SUBJECTS as _SUBJECTS

__all__ = ["ANONYMOUS_SUBJECT", "Outcome", "SubjectInfo", "backfill", "decide", "fingerprint",
           "recompute", "recompute_all", "rows_for_insert", "store_fingerprint",
           "stored_fingerprint", "subject_info", "summarise"]

_SUMMARY_COLUMNS = ("category", "action", "expires_at", "purge_at", "shred_at")
# Built once: every put_many runs it.
_BULK_RET = BulkInsert(_RET, ("record_id", "tenant", "subject_id", "collection",
                              *_SUMMARY_COLUMNS))

#: The subject that anonymised records are re-keyed to. Not a valid caller
#: subject id (it starts with ``~``), so no caller can write, read by subject,
#: erase or shred it as if it were a person.
ANONYMOUS_SUBJECT = "~anonymous"

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class SubjectInfo:
    """What retention needs to know about a subject."""

    regime: str
    last_interaction: dt.datetime | None = None
    contract_end: dt.datetime | None = None
    consent_withdrawn: dt.datetime | None = None
    shred_due: bool = False

    def events(self, created: dt.datetime) -> SubjectEvents:
        return SubjectEvents(created=created, last_interaction=self.last_interaction,
                             contract_end=self.contract_end,
                             consent_withdrawn=self.consent_withdrawn)


def subject_info(conn: Connection, tenant: str, subject_ids: Iterable[str], *,
                 regime_for: RegimeOf) -> dict[str, SubjectInfo]:
    """Jurisdiction regime and recorded events of each subject (batched)."""
    wanted = list(dict.fromkeys(subject_ids))
    found: dict[str, SubjectInfo] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        rows = conn.execute(
            select(_SUBJECTS.c.subject_id, _SUBJECTS.c.jurisdiction,
                   _EVENTS.c.last_interaction, _EVENTS.c.contract_end,
                   _EVENTS.c.consent_withdrawn, _EVENTS.c.shred_due)
            .select_from(_SUBJECTS.outerjoin(_EVENTS, (_EVENTS.c.tenant == _SUBJECTS.c.tenant)
                                             & (_EVENTS.c.subject_id == _SUBJECTS.c.subject_id)))
            .where(_SUBJECTS.c.tenant == tenant, _SUBJECTS.c.subject_id.in_(chunk)))
        for row in rows:
            found[row.subject_id] = SubjectInfo(
                regime=regime_for(row.jurisdiction), last_interaction=row.last_interaction,
                contract_end=row.contract_end, consent_withdrawn=row.consent_withdrawn,
                shred_due=bool(row.shred_due))
    return found


def next_expiry(expiries: Mapping[str, CategoryExpiry | None],
                after: dt.datetime | None = None) -> CategoryExpiry | None:
    """The earliest expiry (later than ``after`` if given)."""
    best: CategoryExpiry | None = None
    for exp in expiries.values():
        if exp is None or (after is not None and exp.expires_at <= after):
            continue
        if best is None or exp.expires_at < best.expires_at:
            best = exp
    return best


def summarise(expiries: Mapping[str, CategoryExpiry | None]) -> dict[str, Any]:
    """The expiry columns of a record from its categories' expiries.

    ``purge_at``: when the last category expires, if every category has an
    expiry and none anonymises (the record then simply goes); ``shred_at``: the
    earliest expiry of a ``shred`` category.
    """
    nxt = next_expiry(expiries)
    values = list(expiries.values())
    purge_at = None
    if values and all(e is not None and e.action is not Action.ANONYMISE for e in values):
        purge_at = max(e.expires_at for e in values if e is not None)
    shreds = [e.expires_at for e in values if e is not None and e.action is Action.SHRED]
    return {"category": nxt.category if nxt else None,
            "action": nxt.action.value if nxt else None,
            "expires_at": nxt.expires_at if nxt else None,
            "purge_at": purge_at, "shred_at": min(shreds) if shreds else None}


def _row(record_id: str, tenant: str, subject_id: str, collection: str,
         columns: Mapping[str, Any]) -> dict[str, Any]:
    return {"record_id": record_id, "tenant": tenant, "subject_id": subject_id,
            "collection": collection, **columns}


def rows_for_insert(
    conn: Connection, schedule: RetentionSchedule, tenant: str, schema: CollectionSchema,
    records: Sequence[tuple[str, str, dt.datetime, Iterable[str]]],
    *, new_subjects: Iterable[str], jurisdiction: str | None, regime_for: RegimeOf,
) -> None:
    """Insert the expiry rows of freshly written records.

    Args:
        records: (record id, subject id, created, field names) per record.
        new_subjects: subjects created by this write (no events yet).
        jurisdiction: the jurisdiction given for the new subjects.
    """
    if not records:
        return
    fresh = set(new_subjects)
    known = subject_info(conn, tenant, [s for _, s, _, _ in records if s not in fresh],
                         regime_for=regime_for)
    new_info = SubjectInfo(regime=regime_for(jurisdiction))
    # Records of a batch share a few shapes (fields, subject facts, time): one
    # summary per shape, and the rows as tuples for one executemany.
    cache: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    rows = []
    collection = schema.name
    for record_id, subject_id, created, fields in records:
        info = known.get(subject_id, new_info)
        key = (tuple(fields), info, created)
        columns = cache.get(key)
        if columns is None:
            summary = summarise(record_expiries(schedule, schema, frozenset(fields),
                                                info.regime, info.events(created)))
            if summary.keys() != set(_SUMMARY_COLUMNS):  # the tuple would drop a column
                raise AssertionError("summarise() and _SUMMARY_COLUMNS disagree")
            columns = cache[key] = tuple(summary[name] for name in _SUMMARY_COLUMNS)
        rows.append((record_id, tenant, subject_id, collection, *columns))
    _BULK_RET.execute(conn, rows)


def recompute(conn: Connection, schedule: RetentionSchedule, schemas: SchemaRegistry,
              tenant: str, *, regime_for: RegimeOf, record_ids: Sequence[str] = (),
              subject_id: str | None = None) -> int:
    """Recompute the expiry rows of some records (by id, or every record of a subject).

    Returns:
        How many records were recomputed.
    """
    query = select(_RECORDS.c.id, _RECORDS.c.subject_id, _RECORDS.c.collection,
                   _RECORDS.c.envelopes, _RECORDS.c.created_at).where(_RECORDS.c.tenant == tenant)
    if conn.dialect.name == "postgresql":
        # Lock the records first: a sweep deleting one of them finishes before we
        # read it (and we then skip it) instead of our expiry row outliving it.
        query = query.with_for_update(of=_RECORDS)
    if subject_id is not None:
        batches = [conn.execute(query.where(_RECORDS.c.subject_id == subject_id)).all()]
    else:
        batches = [conn.execute(query.where(_RECORDS.c.id.in_(list(record_ids[i:i + _CHUNK]))))
                   .all() for i in range(0, len(record_ids), _CHUNK)]
    records = [r for batch in batches for r in batch if r.subject_id != ANONYMOUS_SUBJECT]
    if not records:
        return 0
    info = subject_info(conn, tenant, [r.subject_id for r in records], regime_for=regime_for)
    rows = []
    for rec in records:
        subject = info.get(rec.subject_id, SubjectInfo(regime=DEFAULT_REGIME))
        exps = record_expiries(schedule, schemas.get(rec.collection),
                               decode_envelopes(rec.envelopes), subject.regime,
                               subject.events(rec.created_at))
        rows.append(_row(rec.id, tenant, rec.subject_id, rec.collection, summarise(exps)))
    ids = [r["record_id"] for r in rows]
    for i in range(0, len(ids), _CHUNK):
        conn.execute(delete(_RET).where(_RET.c.record_id.in_(ids[i:i + _CHUNK])))
    conn.execute(insert(_RET), rows)
    return len(rows)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the sweeper does with one record at ``now``.

    ``kind``: ``delete`` (nothing left), ``prune`` (some fields removed, the
    record stays with a later or no expiry), ``anonymise`` (unlinked from the
    subject, keeping ``kept``), ``reschedule`` (nothing expired after all).
    """

    kind: str
    removed: frozenset[str]
    kept: frozenset[str]
    columns: Mapping[str, Any] | None
    shred: bool


def decide(schema: CollectionSchema, fields: Iterable[str],
           expiries: Mapping[str, CategoryExpiry | None], now: dt.datetime) -> Outcome:
    """Apply the expired categories' actions to a record's fields (pure).

    ``delete`` and ``shred`` remove every field of their category;
    ``anonymise`` removes the category's personal and sensitive fields and
    keeps the rest. A record left with nothing is deleted; a record left with
    only fields of expired ``anonymise`` categories is anonymised (unlinked);
    otherwise it stays with the next pending expiry.
    """
    present = frozenset(fields)
    expired = {c: e for c, e in expiries.items() if e is not None and e.expires_at <= now}
    removed: set[str] = set()
    for name in present:
        spec = schema.fields.get(name)
        exp = expired.get(spec.category) if spec is not None else None
        if exp is None:
            continue
        if exp.action is not Action.ANONYMISE or identifying(schema, name):
            removed.add(name)
    kept = present - removed
    shred = any(e.action is Action.SHRED for e in expired.values())
    pending = {schema.fields[n].category for n in kept
               if schema.fields[n].category not in expired}
    if not kept:
        return Outcome("delete", frozenset(removed), kept, None, shred)
    if not pending:
        return Outcome("anonymise", frozenset(removed), kept, None, shred)
    columns = summarise({c: expiries.get(c) for c in pending})
    return Outcome("prune" if removed else "reschedule", frozenset(removed), kept, columns,
                   shred)


# ------------------------------------------------------------------ schedule changes

def fingerprint(schedule: RetentionSchedule, schemas: SchemaRegistry,
                jurisdictions: JurisdictionRegistry) -> str:
    """SHA-256 of everything a stored expiry is computed from: the schedule's
    rules, each field's category and classification, and which regime each
    jurisdiction code falls under."""
    doc = {
        "rules": {cat: {reg: [[str(r.period), r.from_event.value, r.action.value]
                              for r in schedule.rules(cat, reg)]
                        for reg in schedule.regimes(cat)}
                  for cat in schedule.categories},
        "fields": sorted([name, f.name, f.category, f.classification.value]
                         for name in schemas.names
                         for f in schemas.get(name).fields.values()),
        "regimes": sorted([code, regime] for regime in jurisdictions.regimes
                          for code in jurisdictions.profile(regime).jurisdictions),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def stored_fingerprint(conn: Connection) -> str | None:
    """The fingerprint the stored expiries were last computed under."""
    return conn.execute(select(_FINGERPRINTS.c.fingerprint)
                        .order_by(_FINGERPRINTS.c.id.desc()).limit(1)).scalar_one_or_none()


def store_fingerprint(conn: Connection, value: str, now: dt.datetime) -> None:
    conn.execute(insert(_FINGERPRINTS), [{"recorded_at": now, "fingerprint": value}])


def recompute_all(engine: Engine, schedule: RetentionSchedule, schemas: SchemaRegistry,
                  *where: ColumnElement[bool], regime_for: RegimeOf) -> int:
    """Recompute the expiry of every record (but anonymised ones) that matches
    ``where``, in batches by id, each in a transaction of its own (retried);
    returns how many were recomputed."""
    after, count = "", 0
    while True:
        for attempt in transaction_attempts():
            with attempt, engine.begin() as conn:
                rows = conn.execute(
                    select(_RECORDS.c.tenant, _RECORDS.c.id)
                    .where(_RECORDS.c.subject_id != ANONYMOUS_SUBJECT,
                           _RECORDS.c.id > after, *where)
                    .order_by(_RECORDS.c.id).limit(_CHUNK)).all()
                by_tenant: dict[str, list[str]] = {}
                for row in rows:
                    by_tenant.setdefault(row.tenant, []).append(row.id)
                done = sum(recompute(conn, schedule, schemas, tenant, record_ids=ids,
                                     regime_for=regime_for)
                           for tenant, ids in by_tenant.items())
        if not rows:
            return count
        count += done
        after = rows[-1].id


def backfill(engine: Engine, schedule: RetentionSchedule, schemas: SchemaRegistry, *,
             regime_for: RegimeOf) -> int:
    """Give every record that has no expiry row one (records written before the
    retention schema existed, i.e. by a vault upgraded past migration 0003).

    Runs in batches, each in its own transaction; returns how many were added.
    """
    return recompute_all(
        engine, schedule, schemas,
        ~select(_RET.c.record_id).where(_RET.c.record_id == _RECORDS.c.id).exists(),
        regime_for=regime_for)
