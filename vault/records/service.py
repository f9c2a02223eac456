"""The data path: put, put_many, get, get_many, find, update, delete.

Every call follows the same path (see DESIGN.md): validate against the
collection schema, decide with the policy (default deny), check consent,
restriction and cross-border rules for every subject touched
(:class:`~vault.records.gate.DataGate`), touch the store, encrypt or decrypt
with the subject's own data key, and append the audit entry in the same
transaction (:class:`vault._kernel.Call`). A denial is audited too, in a
transaction of its own, before the error is raised.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, String, and_, any_, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError

from vault._kernel import NAMED_LIMIT, Call, Kernel, RecordHooks, transaction_failed
from vault.audit.chain import AuditEvent, Decision, chain_for
from vault.consent.decision import Verdict
from vault.crypto.blind_index import verification_field
from vault.crypto.envelope import RecordContext
from vault.crypto.framing import decode_envelopes, encode_envelopes
from vault.crypto.keystore import DataKey
from vault.errors import (
    AccessDenied,
    DecryptionError,
    InvalidData,
    KeyDestroyed,
    KeyManagementError,
    LegalHoldActive,
    NotFound,
    StepUpRequired,
    UnknownField,
    VersionConflict,
)
from vault.records.gate import CONSENT_REFUSALS, DataGate, consent_error
from vault.records.sealing import (
    Sealer,
    decode_value,
    disclosed,
    encode_value,
    new_id,
    visible_fields,
)
from vault.retention.holdrules import ensure_not_held
from vault.schema import CollectionSchema, FieldSpec
from vault.store.bulk import BulkInsert
from vault.store.erasures import erased_among
from vault.store.retry import transaction_attempts
from vault.store.tables import AUDIT_LOG, BLIND_INDEX, ERASED_SUBJECTS, RECORDS, SUBJECTS
from vault.store.wal import truncate_wal
from vault.types import Actor, Record, check_identifier, check_jurisdiction, check_tenant
from vault.validation import normalize_for_index, validate_record

__all__ = ["RecordService", "load_rows"]

_IN_CHUNK = 500
#: Where a record came from (GDPR Art. 15(1)(g)): a code, never free text.
_SOURCE = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
#: The reason of the audit entry of a search that matched nothing.
MISSED = "matched:0"

# Statements of the hot paths, built once (building one costs more than
# running it from SQLAlchemy's compiled cache).
# Rows are looked up by primary key alone, and their tenant and collection
# checked here: with "tenant = ? AND collection = ?" in the WHERE clause a
# planner with stale statistics scans the whole (tenant, collection) index.
_SELECT_ROWS_FROM = select(
    RECORDS.c.id, RECORDS.c.subject_id, RECORDS.c.envelopes, RECORDS.c.tenant,
    RECORDS.c.collection, RECORDS.c.version, RECORDS.c.seal,
    # The subject's restriction flag and jurisdiction come with its records, so
    # the consent gate of a read needs no statement of its own in the common case;
    # so does its erasure marker, which a restored key store cannot undo.
    SUBJECTS.c.restricted_at, SUBJECTS.c.jurisdiction, ERASED_SUBJECTS.c.erased_at,
).select_from(RECORDS.outerjoin(SUBJECTS, and_(
    SUBJECTS.c.tenant == RECORDS.c.tenant, SUBJECTS.c.subject_id == RECORDS.c.subject_id,
)).outerjoin(ERASED_SUBJECTS, and_(
    ERASED_SUBJECTS.c.tenant == RECORDS.c.tenant,
    ERASED_SUBJECTS.c.subject_id == RECORDS.c.subject_id,
)))
_SELECT_ROWS = _SELECT_ROWS_FROM.where(RECORDS.c.id.in_(bindparam("in_ids", expanding=True)))
# PostgreSQL: the ids as one array parameter (``id = ANY(:ids)``), in chunks of up to
# _ANY_CHUNK: a 500-parameter IN list per chunk costs the server a parse and plan each
# time and the client 20 round trips per 10,000 records (about 3x slower in all).
_SELECT_ROWS_ANY = _SELECT_ROWS_FROM.where(
    RECORDS.c.id == any_(bindparam("any_ids", type_=ARRAY(String))))
_ANY_CHUNK = 10_000
# The rows of a batch write, as tuples in one executemany each (vault.store.bulk).
_BULK_SUBJECTS = BulkInsert(SUBJECTS, ("tenant", "subject_id", "pseudonym", "jurisdiction",
                                       "created_at"))
_BULK_RECORDS = BulkInsert(RECORDS, ("id", "tenant", "collection", "subject_id", "envelopes",
                                     "created_at", "updated_at", "version", "seal", "source"))
# An update locks its record's row first (PostgreSQL), so that two updates of one
# record queue and each seals the version after the other's.
_LOCK_RECORD = select(RECORDS.c.id).where(RECORDS.c.id == bindparam("rid")).with_for_update()
_BULK_BLIND = BulkInsert(BLIND_INDEX, ("tenant", "collection", "field", "digest", "record_id"))


def _chunks(items: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RecordService:
    """Encrypted, access-controlled, audited records (the facade's data methods).

    ``hooks`` hear of inserted and updated records inside the write's transaction.
    """

    def __init__(self, kernel: Kernel, *, hooks: RecordHooks) -> None:
        self._k = kernel
        self._hooks = hooks
        self._seal = Sealer(kernel)
        self._gate = DataGate(kernel)

    # ------------------------------------------------------------------ writes

    def put_many(
        self, actor: Actor, collection: str, items: Sequence[Mapping[str, Any]], *, purpose: str,
        subject_ids: Sequence[str | None] | None = None, jurisdiction: str | None = None,
        source: str | None = None,
    ) -> list[str]:
        """Store many records in one transaction (see ``Vault.put_many``)."""
        call, schema = self._begin(actor, "write", collection, purpose)
        subject_ids = self._check_batch(call, items, subject_ids, jurisdiction)
        if source is not None and (not isinstance(source, str)
                                   or not _SOURCE.fullmatch(source)):
            call.refuse(InvalidData("source must be a short code such as web_form, import "
                                    "or sales_call", field="source"))
        values = [self._validate(call, schema, item, partial=False) for item in items]
        written = sorted({name for v in values for name, x in v.items() if x is not None})
        self._require(call, schema, "write", written)
        if not items:
            return []
        tenant = call.actor.tenant
        given = sorted({s for s in subject_ids if s is not None})
        known = self._known_subjects(call, given, jurisdiction)
        subjects = [s if s is not None else new_id() for s in subject_ids]
        new_subjects = list(dict.fromkeys(s for s in subjects if s not in known))
        gate_events = self._gate_write(call, schema, subjects, written,
                                       {s: jurisdiction for s in new_subjects})
        try:
            keys = self._subject_keys(tenant, subjects, create=self._creatable(
                tenant, new_subjects, set(given)))
        except KeyDestroyed as exc:
            call.refuse(exc, fields=written)
        except KeyManagementError as exc:  # the HSM or KMS failed: nothing written
            call.refuse(exc, fields=written, decision=Decision.ERROR)
        # One pseudonym per subject, used by the subject rows and the audit entries.
        pseudonyms = {s: self._k.pseudonym(tenant, s) for s in dict.fromkeys(subjects)}
        record_rows, index_rows, events = self._seal_batch(
            call, schema, subjects, values, keys, pseudonyms)
        now = record_rows[0]["created_at"]

        def insert(conn: Connection) -> None:
            if new_subjects:
                _BULK_SUBJECTS.execute(conn, [
                    (tenant, s, pseudonyms[s], jurisdiction, now) for s in new_subjects
                ])
            _BULK_RECORDS.execute(conn, [
                (r["id"], tenant, schema.name, r["subject_id"], r["envelopes"], now, now, 1,
                 r["seal"], source)
                for r in record_rows
            ])
            self._hooks.records_inserted(conn, tenant, schema, record_rows, values,
                                         new_subjects, jurisdiction)
            _BULK_BLIND.execute(conn, index_rows)
            call.record(events)
            call.record(gate_events)

        call.run(insert)
        return [row["id"] for row in record_rows]

    def _check_batch(self, call: Call, items: object, subject_ids: object,
                     jurisdiction: object) -> list[str | None]:
        """The arguments of ``put_many`` other than the data, or an audited refusal."""
        if isinstance(items, Mapping) or not isinstance(items, Sequence):
            call.refuse(InvalidData("items must be a sequence of mappings"))
        if subject_ids is None:
            subject_ids = [None] * len(items)
        if not isinstance(subject_ids, Sequence) or len(subject_ids) != len(items):
            call.refuse(InvalidData("subject_ids must pair one-to-one with items"))
        if jurisdiction is not None:
            try:
                check_jurisdiction(jurisdiction)
            except InvalidData as exc:
                call.refuse(exc)
        for sid in subject_ids:
            if sid is not None:
                try:
                    check_identifier(sid, "subject_id")
                except InvalidData as exc:
                    call.refuse(exc)
        return list(subject_ids)

    def _known_subjects(self, call: Call, given: Sequence[str],
                        jurisdiction: str | None) -> set[str]:
        """Which of the caller's subject ids exist; a jurisdiction other than the one
        recorded for one of them is refused."""
        known: set[str] = set()
        if not given:
            return known
        tenant = call.actor.tenant
        with self._k.read_only() as conn:
            erased = erased_among(conn, tenant, given)
            if erased:
                # Marked erased in the data database: refused whatever the key
                # store says (an older copy of it may have been restored).
                conn.rollback()
                call.refuse(_destroyed(), subjects=[
                    self._k.pseudonym(tenant, s) for s in sorted(erased)[:NAMED_LIMIT]])
            for chunk in _chunks(given):
                for sid, stored in conn.execute(
                    select(SUBJECTS.c.subject_id, SUBJECTS.c.jurisdiction)
                    .where(SUBJECTS.c.tenant == tenant, SUBJECTS.c.subject_id.in_(chunk))
                ):
                    known.add(sid)
                    if jurisdiction is not None and stored != jurisdiction:
                        # Recorded at creation; a different one here is a conflict,
                        # not a change (set_jurisdiction is audited). The message
                        # does not say which one: a writer may not read a subject's
                        # jurisdiction (subjects.get needs consent.manage). The
                        # refusal is the subject's business.
                        conn.rollback()
                        call.refuse(InvalidData(
                            f"a subject of this write already has another jurisdiction "
                            f"than {jurisdiction}; change it with "
                            "subjects.set_jurisdiction", field="jurisdiction"),
                            subjects=(self._k.pseudonym(tenant, sid),))
        return known

    def _seal_batch(
        self, call: Call, schema: CollectionSchema, subjects: Sequence[str],
        values: Sequence[Mapping[str, Any]], keys: Mapping[str, DataKey],
        pseudonyms: Mapping[str, str],
    ) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]], list[AuditEvent]]:
        """Encrypt and index every record of a batch; the audit entries, one per chain
        (as :meth:`Kernel.group_by_chain` would merge one event per record, without
        building those 10,000 events first)."""
        tenant = call.actor.tenant
        now = self._k.clock.now()
        record_rows: list[dict[str, Any]] = []
        index_rows: list[tuple[Any, ...]] = []
        chains = self._k.audit_log.chains
        groups: dict[int, tuple[list[str], list[str], set[str]]] = {}
        for subject, value in zip(subjects, values, strict=True):
            record_id = new_id()
            # encode_value inline for text (most fields): this runs once per field.
            plaintexts = {name: b"s" + x.encode("utf-8") if type(x) is str else encode_value(x)
                          for name, x in value.items() if x is not None}
            framed, seal = self._seal.seal(keys[subject], tenant, schema, record_id,
                                           subject, plaintexts)
            record_rows.append({
                "id": record_id, "tenant": tenant, "collection": schema.name,
                "subject_id": subject, "envelopes": framed,
                "created_at": now, "updated_at": now, "version": 1, "seal": seal,
            })
            self._seal.index_tuples(index_rows, tenant, schema, record_id, value)
            pseudonym = pseudonyms[subject]
            ids, named, fields = groups.setdefault(chain_for((pseudonym,), chains),
                                                   ([], [], set()))
            ids.append(record_id)
            named.append(pseudonym)
            fields.update(plaintexts)
        events = [
            AuditEvent(tenant=tenant, actor=call.actor.id, action="write",
                       decision=Decision.ALLOW, collection=schema.name, record_ids=tuple(ids),
                       subjects=tuple(dict.fromkeys(named)), fields=tuple(sorted(fields)),
                       purpose=call.purpose)
            for ids, named, fields in groups.values()
        ]
        return record_rows, index_rows, events

    def _creatable(self, tenant: str, new_subjects: Sequence[str],
                   given: set[str]) -> list[str]:
        """New subjects that need a data key.

        Only caller-supplied subject ids can already have one (from a write
        interrupted between the key store and the data database); generated
        ids are fresh. A destroyed key raises KeyDestroyed: the id is burnt.
        """
        maybe = [s for s in new_subjects if s in given]
        present = self._k.keystore.existing(tenant, maybe) if maybe else {}
        if any(present.values()):
            raise KeyDestroyed("the data subject's key was destroyed (crypto-shredded)")
        return [s for s in new_subjects if s not in present]

    def update(
        self, actor: Actor, collection: str, record_id: str, changes: Mapping[str, Any], *,
        purpose: str,
        if_version: int | None = None,
    ) -> None:
        """Change some fields of a record (see ``Vault.update``)."""
        call, schema = self._begin(actor, "update", collection, purpose)
        rid = self._record_id(call, record_id)
        values = self._validate(call, schema, changes, partial=True, record_ids=[rid])
        if not values:
            call.refuse(InvalidData("no changes given"), record_ids=[rid])
        self._require(call, schema, "write", sorted(values), record_ids=[rid])
        tenant = call.actor.tenant
        purpose = _purpose(call)

        def change(conn: Connection) -> None:
            conn.execute(_LOCK_RECORD, {"rid": rid})
            row = load_rows(conn, tenant, schema.name, [rid]).get(rid)
            if row is None:
                raise NotFound(f"no record {rid} in {schema.name}")
            if row.erased_at is not None:
                raise _destroyed()
            _check_version(row, if_version)
            refused, gate_events = self._gate.check(
                conn, call.actor, schema, purpose, [row.subject_id], sorted(values))
            if refused:
                raise consent_error(purpose, refused)
            pseudonym = self._k.pseudonym(tenant, row.subject_id)
            self._refuse_erased(tenant, [row.subject_id])
            key = self._k.keystore.get_key(tenant, row.subject_id)
            # The stored record must be the one its seal vouches for: an update
            # never re-seals envelopes that were tampered with.
            self._seal.check(key, tenant, schema, row)
            envelopes = decode_envelopes(row.envelopes)
            envelopes.update(self._seal.encrypt_fields(key, tenant, schema, rid,
                                                       row.subject_id, values))
            for name, value in values.items():
                if value is None:
                    envelopes.pop(name, None)
            framed = encode_envelopes(envelopes)
            version = row.version + 1
            changed = conn.execute(
                # The version read above (the row is locked too), so that two
                # concurrent updates cannot both pass an ``if_version`` check.
                update(RECORDS).where(RECORDS.c.id == rid,
                                      RECORDS.c.version == row.version).values(
                    envelopes=framed, updated_at=self._k.clock.now(), version=version,
                    seal=self._seal.reseal(key, tenant, schema.name, rid, row.subject_id,
                                           framed, version))
            )
            if changed.rowcount != 1:
                raise VersionConflict(f"record {rid} was changed concurrently")
            self._hooks.records_updated(conn, tenant, [rid])
            touched = [n for n in values if n in schema.searchable_fields
                       or n in schema.verifiable_fields]
            if touched:
                labels = [n if n in schema.searchable_fields else verification_field(n)
                          for n in touched]
                conn.execute(delete(BLIND_INDEX).where(BLIND_INDEX.c.record_id == rid,
                                                       BLIND_INDEX.c.field.in_(labels)))
                rows: list[tuple[Any, ...]] = []
                self._seal.index_tuples(rows, tenant, schema, rid,
                                        {n: values[n] for n in touched})
                _BULK_BLIND.execute(conn, rows)
            call.record([AuditEvent(
                tenant=tenant, actor=call.actor.id, action="update", decision=Decision.ALLOW,
                collection=schema.name, record_ids=(rid,), subjects=(pseudonym,),
                fields=tuple(sorted(values)), purpose=purpose, context={"version": version},
            )])
            call.record(gate_events)

        try:
            call.run(change)
        except CONSENT_REFUSALS as exc:
            call.refuse(exc, record_ids=[rid])
        except (NotFound, KeyDestroyed, DecryptionError, KeyManagementError,
                VersionConflict) as exc:
            call.refuse(exc, record_ids=[rid], decision=Decision.ERROR)
        # The replaced envelopes must not stay readable in the WAL while the
        # subject's key is live (a rectification is a deletion of the old value).
        truncate_wal(self._k.engine)

    def delete(self, actor: Actor, collection: str, record_id: str, *, purpose: str,
               if_version: int | None = None) -> None:
        """Delete a record and its blind-index entries (see ``Vault.delete``)."""
        call, schema = self._begin(actor, "delete", collection, purpose)
        rid = self._record_id(call, record_id)
        self._require(call, schema, "delete", schema.field_names, record_ids=[rid])
        step_up = self._k.step_up_missing(call.actor, "erase")
        if step_up is not None:
            call.refuse(step_up, record_ids=[rid])
        tenant = call.actor.tenant

        def remove(conn: Connection) -> None:
            row = load_rows(conn, tenant, schema.name, [rid]).get(rid)
            if row is None:
                raise NotFound(f"no record {rid} in {schema.name}")
            _check_version(row, if_version)
            ensure_not_held(conn, tenant, row.subject_id, self._k.clock.now())
            # A delete needs no data key, but like every data operation it is refused
            # while the key store cannot answer (fail closed, one definition of erased).
            self._k.keystore.is_destroyed(tenant, row.subject_id)
            conn.execute(delete(BLIND_INDEX).where(BLIND_INDEX.c.record_id == rid))
            if conn.execute(delete(RECORDS).where(
                    RECORDS.c.id == rid, RECORDS.c.version == row.version)).rowcount != 1:
                raise VersionConflict(f"record {rid} was changed concurrently")
            call.record([AuditEvent(
                tenant=tenant, actor=call.actor.id, action="delete", decision=Decision.ALLOW,
                collection=schema.name, record_ids=(rid,),
                subjects=(self._k.pseudonym(tenant, row.subject_id),),
                fields=tuple(sorted(decode_envelopes(row.envelopes))), purpose=call.purpose,
            )])

        try:
            call.run(remove)
        except LegalHoldActive as exc:  # a refusal (reason legal_hold), not a failure
            call.refuse(exc, record_ids=[rid])
        except (NotFound, VersionConflict, KeyManagementError) as exc:
            call.refuse(exc, record_ids=[rid], decision=Decision.ERROR)
        truncate_wal(self._k.engine)  # no deleted bytes stay in the WAL

    # ------------------------------------------------------------------ reads

    def get_many(
        self, actor: Actor, collection: str, record_ids: Sequence[str], *, purpose: str,
        fields: Sequence[str] | None = None,
    ) -> list[Record]:
        """Read records in one transaction (see ``Vault.get``/``get_many``)."""
        call, schema = self._begin(actor, "read", collection, purpose)
        if isinstance(record_ids, str) or not isinstance(record_ids, Sequence):
            call.refuse(InvalidData("record_ids must be a sequence of ids"))
        ids = [self._record_id(call, r) for r in record_ids]
        if not ids:
            return []
        return self._read(call, schema, ids, fields)

    def find(self, actor: Actor, collection: str, *, purpose: str,
             **equals: Any) -> list[Record]:
        """Find records by blind index (see ``Vault.find``)."""
        call, schema = self._begin(actor, "search", collection, purpose)
        if not equals:
            call.refuse(InvalidData("find needs at least one field=value criterion"))
        wanted: dict[str, str] = {}
        for name, value in equals.items():
            try:
                spec: FieldSpec = schema.field(name)
                if not spec.searchable:
                    raise InvalidData(f"field {name} is not searchable", field=name)
                wanted[name] = normalize_for_index(spec, value)
            except InvalidData as exc:
                call.refuse(exc, fields=[name] if name in schema.fields else [])
        searched = sorted(wanted)
        self._require(call, schema, "search", searched)
        # A search answers "does a record hold this value?": on a field the actor
        # may not read unmasked it would be an oracle for the value (guess, search,
        # repeat), so it needs the right to read the field in clear as well.
        self._require(call, schema, "read", searched, why="search needs read")
        held = self._k.sensitive_held(call.actor, schema, searched)
        if held:
            call.refuse(_step_up_required(held), fields=sorted(held))
        self._limit_misses(call)
        tenant = call.actor.tenant
        with self._k.engine.connect() as conn:
            ids: set[str] | None = None
            for name, normalized in wanted.items():
                digest = self._seal.digest(tenant, schema, name, normalized)
                hits = set(conn.execute(
                    select(BLIND_INDEX.c.record_id).where(
                        BLIND_INDEX.c.tenant == tenant, BLIND_INDEX.c.collection == schema.name,
                        BLIND_INDEX.c.field == name, BLIND_INDEX.c.digest == digest)
                ).scalars())
                ids = hits if ids is None else ids & hits
            conn.rollback()
        return self._read(call, schema, sorted(ids or ()), None, must_exist=False,
                          verify=wanted, searched=searched)

    def _limit_misses(self, call: Call) -> None:
        """Refuse (audited) an actor past ``search_miss_limit`` misses in the window."""
        cfg = self._k.settings
        if not cfg.search_miss_limit:
            return
        since = self._k.clock.now() - dt.timedelta(seconds=cfg.search_miss_window_seconds)
        with self._k.read_only() as conn:
            misses = conn.execute(select(func.count()).select_from(AUDIT_LOG).where(
                AUDIT_LOG.c.ts >= since, AUDIT_LOG.c.tenant == call.actor.tenant,
                AUDIT_LOG.c.actor == call.actor.id, AUDIT_LOG.c.action == "search",
                AUDIT_LOG.c.decision == Decision.ALLOW.value,
                AUDIT_LOG.c.reason == MISSED)).scalar_one()
        if misses >= cfg.search_miss_limit:
            call.refuse(AccessDenied(
                f"search refused: {misses} searches matched nothing in the last "
                f"{cfg.search_miss_window_seconds} s (search_miss_limit)",
                reason="search_miss_limit"))

    def subject_records(self, tenant: str, subject_id: str, *,
                        actor: Actor | None = None) -> list[str]:
        """Ids of every record of a subject, oldest first (ids only, no data).

        Which records a person has is itself personal: ``actor`` needs
        ``dsar.process`` (the local operator, None, needs nothing), and every call
        is audited (``subjects.records``, with the subject's pseudonym).
        """
        check_tenant(tenant)
        check_identifier(subject_id, "subject_id")
        self._k.authorise(actor, "dsar", "dsar.process", tenant=tenant)
        with self._k.read_only() as conn:
            ids = list(conn.execute(
                select(RECORDS.c.id).where(RECORDS.c.tenant == tenant,
                                           RECORDS.c.subject_id == subject_id)
                .order_by(RECORDS.c.created_at)
            ).scalars())
        self._k.audit("subjects.records", actor=actor, tenant=tenant,
                      subjects=(self._k.pseudonym(tenant, subject_id),),
                      reason=f"records:{len(ids)}")
        return ids

    def reseal_subject(self, actor: Actor | None, tenant: str, subject_id: str, *,
                       reason: str) -> str | None:
        """Move every remaining record of a subject under a fresh data key and a new
        subject id (its successor), so that the old key can be destroyed without
        losing what must be kept.

        For a partial erasure (GDPR Art. 17(3), CCPA §1798.105(d), PIPL Art. 47 ¶2):
        the caller first deletes what goes, then reseals what stays, then destroys
        the old key. Fields erased earlier live on only in backups, encrypted under
        the old key, so they cannot come back once it is destroyed. The successor
        is created restricted (storage and security only), with the subject's
        jurisdiction; its consents start empty. ``dsar.process`` decides; audited
        (``records.reseal``, naming both pseudonyms).

        Returns:
            The successor's id, or None when the subject has no records left.

        Raises:
            InvalidData: a malformed id or reason. NotFound: no such subject.
            KeyDestroyed: the subject is already erased.
        """
        check_tenant(tenant)
        check_identifier(subject_id, "subject_id")
        check_identifier(reason, "reason")
        self._k.authorise(actor, "dsar", "dsar.process", tenant=tenant)
        k = self._k
        with k.read_only() as conn:
            subject = conn.execute(select(SUBJECTS).where(
                SUBJECTS.c.tenant == tenant, SUBJECTS.c.subject_id == subject_id)).one_or_none()
            rows = conn.execute(select(RECORDS).where(
                RECORDS.c.tenant == tenant, RECORDS.c.subject_id == subject_id)).all()
            if subject is None:
                raise NotFound(f"no data subject {subject_id} in tenant {tenant}")
            if erased_among(conn, tenant, [subject_id]):
                raise _destroyed()
        if not rows:
            return None
        old_key = k.keystore.get_key(tenant, subject_id)
        successor = new_id()
        new_key = self._subject_keys(tenant, [successor], create=[successor])[successor]
        now = k.clock.now()
        resealed: list[tuple[str, int, bytes, bytes]] = []
        index_rows: list[tuple[Any, ...]] = []
        for row in rows:
            schema = k.rules.schemas.get(row.collection)
            # Only what the record's seal vouches for moves under the new key.
            self._seal.check(old_key, tenant, schema, row)
            plain, _ = k.cipher.decrypt_framed(
                old_key, row.envelopes, RecordContext(tenant, schema.name, row.id, subject_id),
                frozenset(schema.field_names))
            framed, seal = self._seal.seal(new_key, tenant, schema, row.id, successor, plain,
                                           version=row.version + 1)
            resealed.append((row.id, row.version, framed, seal))
            self._seal.index_tuples(index_rows, tenant, schema, row.id,
                                    {n: decode_value(v) for n, v in plain.items()})
        ids = [rid for rid, *_ in resealed]

        def move(conn: Connection) -> None:
            _BULK_SUBJECTS.execute(conn, [(tenant, successor, k.pseudonym(tenant, successor),
                                           subject.jurisdiction, now)])
            conn.execute(update(SUBJECTS).where(
                SUBJECTS.c.tenant == tenant, SUBJECTS.c.subject_id == successor).values(
                restricted_at=now, restriction_reason=reason[:64]))
            conn.execute(delete(BLIND_INDEX).where(BLIND_INDEX.c.record_id.in_(ids)))
            for rid, version, framed, seal in resealed:
                moved = conn.execute(update(RECORDS).where(
                    RECORDS.c.id == rid, RECORDS.c.version == version).values(
                    subject_id=successor, envelopes=framed, seal=seal, updated_at=now,
                    version=version + 1))
                if moved.rowcount != 1:  # changed since it was read: nothing is kept
                    raise VersionConflict(f"record {rid} was changed during the reseal")
            _BULK_BLIND.execute(conn, index_rows)
            self._hooks.records_updated(conn, tenant, ids)
            k.audit_log.append(conn, [k.event(
                "records.reseal", actor=actor, tenant=tenant, record_ids=ids,
                subjects=(k.pseudonym(tenant, subject_id), k.pseudonym(tenant, successor)),
                purpose="dsar_fulfilment", reason=reason)])

        try:
            for attempt in transaction_attempts():
                with attempt, k.engine.begin() as conn:
                    move(conn)
        except SQLAlchemyError as exc:
            transaction_failed(exc)
        truncate_wal(k.engine)
        return successor

    def _read(
        self, call: Call, schema: CollectionSchema, ids: Sequence[str],
        fields: Sequence[str] | None, *, must_exist: bool = True,
        verify: Mapping[str, str] | None = None, searched: Sequence[str] | None = None,
    ) -> list[Record]:
        requested = self._requested(call, schema, fields, record_ids=ids)
        readable, maskable = self._read_decisions(call, schema, requested, record_ids=ids)
        # Sensitive fields need a second factor: asked for by name, the read is
        # refused; otherwise they are left out and named (Record.step_up).
        held = self._k.sensitive_held(call.actor, schema, readable | maskable)
        if held:
            if fields is not None:
                call.refuse(_step_up_required(held), fields=sorted(held), record_ids=ids)
            readable, maskable = readable - held, maskable - held
            requested = tuple(f for f in requested if f not in held)
        actor, purpose, action = call.actor, _purpose(call), call.action
        tenant = actor.tenant
        unique_ids = list(dict.fromkeys(ids))
        rows: dict[str, Any] = {}
        refused: dict[str, Verdict] = {}

        def read(conn: Connection) -> list[Record]:
            nonlocal rows, refused
            rows = load_rows(conn, tenant, schema.name, unique_ids)
            missing = [r for r in unique_ids if r not in rows]
            if missing and must_exist:
                raise NotFound(f"{len(missing)} record(s) not found in {schema.name}: "
                               f"{', '.join(missing[:5])}")
            subject_ids = list(dict.fromkeys(row.subject_id for row in rows.values()))
            refused, gate_events = self._gate.check(
                conn, actor, schema, purpose, subject_ids,
                [f for f in requested if f in readable or f in maskable], loaded=rows)
            if refused and must_exist:
                raise consent_error(purpose, refused)
            if refused:  # find: the refused subjects' records are withheld
                gate_events += self._gate.withheld_events(actor, schema, purpose, action,
                                                          rows, refused)
                subject_ids = [s for s in subject_ids if s not in refused]
            # A subject marked erased is refused whatever the key store holds.
            erased = {row.subject_id for row in rows.values() if row.erased_at is not None}
            if erased and must_exist:
                raise _destroyed()
            if erased:  # find: the erased subjects' records are left out
                subject_ids = [s for s in subject_ids if s not in erased]
            try:
                keys = self._k.keystore.get_keys(tenant, subject_ids)
            except KeyDestroyed:
                if must_exist:
                    raise
                # find: the erased subjects' records are left out.
                keys = self._k.keystore.get_keys(tenant, subject_ids, missing_ok=True)
            records: dict[str, Record] = {}
            visible = visible_fields(requested, readable, maskable)
            for rid in unique_ids:
                row = rows.get(rid)
                if row is None or row.subject_id not in keys:
                    continue
                key = keys[row.subject_id]
                if verify and not self._seal.matches(key, tenant, schema, row, verify):
                    continue
                records[rid] = self._seal.view(key, tenant, schema, row, readable, maskable,
                                               requested, visible)
                if held:
                    records[rid] = dataclasses.replace(records[rid], step_up=held)
            call.record(self._read_events(call, schema, list(records.values())))
            if searched is not None:
                # Every search is an access, hit or miss: which fields it searched
                # on and how many records matched (no value, no record id).
                call.record([AuditEvent(
                    tenant=tenant, actor=actor.id, action=action, decision=Decision.ALLOW,
                    collection=schema.name, fields=tuple(searched), purpose=purpose,
                    reason=f"matched:{len(records)}")])
            call.record(gate_events)
            return [records[r] for r in ids if r in records]

        try:
            return call.run(read)
        except CONSENT_REFUSALS as exc:
            call.refuse(exc, record_ids=list(unique_ids[:NAMED_LIMIT]),
                        subjects=[self._k.pseudonym(tenant, s)
                                  for s in list(refused)[:NAMED_LIMIT]])
        except (NotFound, KeyDestroyed, DecryptionError, KeyManagementError) as exc:
            # KeyManagementError: a key could not be unwrapped (the HSM or KMS is
            # unavailable, or a wrapped key fails its binding): nothing returned.
            subjects = []
            if isinstance(exc, KeyDestroyed | DecryptionError | KeyManagementError):
                subjects = [self._k.pseudonym(tenant, r.subject_id)
                            for r in rows.values()][:NAMED_LIMIT]
            call.refuse(exc, record_ids=list(unique_ids[:NAMED_LIMIT]), subjects=subjects,
                        decision=Decision.ERROR)

    def _read_events(self, call: Call, schema: CollectionSchema,
                     records: Sequence[Record]) -> list[AuditEvent]:
        """The audit entries of a read: the same as one event per subject merged by
        :meth:`Kernel.group_by_chain`, built in one pass (this runs once per record read)."""
        by_subject: dict[str, list[Record]] = {}
        for record in records:
            by_subject.setdefault(record.subject_id, []).append(record)
        tenant = call.actor.tenant
        chains = self._k.audit_log.chains
        groups: dict[int, tuple[list[str], list[str], set[str]]] = {}
        shown: dict[tuple[tuple[str, ...], frozenset[str]], tuple[str, ...]] = {}
        for subject, recs in by_subject.items():
            pseudonym = self._k.pseudonym(tenant, subject)
            chain = chain_for((pseudonym,), chains) if len(by_subject) > 1 else 0
            ids, subjects, fields = groups.setdefault(chain, ([], [], set()))
            subjects.append(pseudonym)
            for record in recs:
                ids.append(record.id)
                if not record.masked:  # what disclosed() gives: the names read
                    fields.update(record.data)
                    continue
                shape = (tuple(record.data), record.masked)
                names = shown.get(shape)
                if names is None:
                    names = shown[shape] = disclosed([record])
                fields.update(names)
        return [
            AuditEvent(
                tenant=tenant, actor=call.actor.id, action=call.action,
                decision=Decision.ALLOW, collection=schema.name, record_ids=tuple(ids),
                subjects=tuple(dict.fromkeys(subjects)), fields=tuple(sorted(fields)),
                purpose=call.purpose,
            )
            for ids, subjects, fields in groups.values()
        ]

    # ------------------------------------------------------------------ checks

    def _begin(self, actor: object, action: str, collection: object,
               purpose: object) -> tuple[Call, CollectionSchema]:
        """Check the actor, collection and purpose; audit and raise on a bad one."""
        if not isinstance(actor, Actor):
            raise InvalidData("actor must be a vault.Actor", field="actor")
        rules = self._k.rules
        call = Call(self._k, actor, action)
        coll_name = collection if isinstance(collection, str) else None
        purp = purpose if isinstance(purpose, str) else None
        try:
            if coll_name is None:
                raise InvalidData("collection must be a string", field="collection")
            schema = rules.schemas.get(coll_name)
        except InvalidData as exc:
            call.collection = coll_name if coll_name in rules.schemas else None
            call.purpose = purp if purp in rules.purposes else None
            call.refuse(exc)
        call.collection = schema.name
        try:
            if purp is None:
                raise InvalidData("purpose must be a string", field="purpose")
            rules.purposes.get(purp)
        except InvalidData as exc:
            call.refuse(exc)
        call.purpose = purp
        return call, schema

    def _record_id(self, call: Call, record_id: object) -> str:
        try:
            return check_identifier(record_id, "record_id")
        except InvalidData as exc:
            call.refuse(exc)

    def _validate(self, call: Call, schema: CollectionSchema, data: object, *,
                  partial: bool, record_ids: Sequence[str] = ()) -> dict[str, Any]:
        try:
            if not isinstance(data, Mapping):
                raise InvalidData("data must be a mapping of field names to values")
            region = data.get("country")
            return validate_record(
                schema, data, partial=partial,
                default_region=region.upper() if isinstance(region, str) and len(region) == 2
                else None,
            )
        except InvalidData as exc:
            fields = [exc.field] if exc.field is not None and exc.field in schema.fields else []
            call.refuse(exc, fields=fields, record_ids=record_ids)

    def _require(self, call: Call, schema: CollectionSchema, action: str,
                 fields: Sequence[str], *, record_ids: Sequence[str] = (),
                 subjects: Sequence[str] = (), why: str | None = None) -> None:
        """Raise AccessDenied (audited as the call's action) unless the policy allows
        ``action`` on every field; ``why`` heads the message."""
        actor = call.actor
        allowed = self._k.policy.allowed_fields(
            actor.id, actor.tenant, schema.name, action, _purpose(call), tuple(fields)
        )
        denied = sorted(set(fields) - allowed)
        if denied:
            call.refuse(
                AccessDenied(f"{why or action + ' denied'} on {schema.name}: "
                             f"{', '.join(denied)}",
                             reason=self._why_denied(call, schema, (action,))),
                fields=denied, record_ids=record_ids, subjects=subjects,
            )

    def _why_denied(self, call: Call, schema: CollectionSchema,
                    actions: Sequence[str]) -> str:
        """The reason code of a policy refusal, from the caller's own rights only
        (never from what records exist): no role in the tenant, no role allowing
        the action on the collection for the purpose, or only other fields."""
        actor, purpose = call.actor, _purpose(call)
        if not self._k.policy.roles_for(actor.id, actor.tenant):
            return "no_role"
        if not any(self._k.policy.allowed_fields(actor.id, actor.tenant, schema.name, action,
                                                 purpose, schema.field_names)
                   for action in actions):
            return "purpose_not_allowed"
        return "field_not_allowed"

    def _requested(self, call: Call, schema: CollectionSchema,
                   fields: Sequence[str] | None, *,
                   record_ids: Sequence[str] = ()) -> tuple[str, ...]:
        if fields is None:
            return schema.field_names
        if (isinstance(fields, str) or not isinstance(fields, Sequence)
                or not all(isinstance(f, str) for f in fields)):
            call.refuse(InvalidData("fields must be a sequence of field names", field="fields"),
                        record_ids=record_ids)
        for name in fields:
            if name not in schema.fields:
                call.refuse(UnknownField(f"collection {schema.name} has no such field",
                                         field=None), record_ids=record_ids)
        return tuple(dict.fromkeys(fields))

    def _read_decisions(self, call: Call, schema: CollectionSchema,
                        requested: Sequence[str], *,
                        record_ids: Sequence[str] = ()) -> tuple[frozenset[str], frozenset[str]]:
        actor, purpose = call.actor, _purpose(call)
        fields = tuple(requested)
        readable = self._k.policy.allowed_fields(
            actor.id, actor.tenant, schema.name, "read", purpose, fields)
        maskable = self._k.policy.allowed_fields(
            actor.id, actor.tenant, schema.name, "read_masked", purpose, fields) - readable
        if not readable and not maskable:
            call.refuse(
                AccessDenied(f"read denied on every requested field of {schema.name}",
                             reason=self._why_denied(call, schema, ("read", "read_masked"))),
                fields=fields, record_ids=record_ids,
            )
        return readable, maskable

    def _gate_write(
        self, call: Call, schema: CollectionSchema, subjects: Sequence[str],
        fields: Sequence[str], new_subjects: Mapping[str, str | None],
    ) -> list[AuditEvent]:
        """The consent gate before a write: refuse the whole batch (audited) if any
        subject is refused; otherwise return the transfer audit events."""
        purpose = _purpose(call)
        if all(s in new_subjects for s in subjects):
            # Only subjects this write creates: nothing stored to look up.
            refused, events = self._gate.check(None, call.actor, schema, purpose, subjects,
                                               fields, new_subjects=new_subjects)
        else:
            with self._k.read_only() as conn:
                refused, events = self._gate.check(conn, call.actor, schema, purpose,
                                                   subjects, fields,
                                                   new_subjects=new_subjects)
        if refused:
            tenant = call.actor.tenant
            call.refuse(consent_error(purpose, refused), fields=fields,
                        subjects=[self._k.pseudonym(tenant, s)
                                  for s in list(refused)[:NAMED_LIMIT]])
        return events

    # ------------------------------------------------------------------ store

    def _subject_keys(
        self, tenant: str, subject_ids: Sequence[str], *, create: Sequence[str] = (),
    ) -> dict[str, DataKey]:
        keys: dict[str, DataKey] = {}
        if create:
            for key in self._k.keystore.create_keys(tenant, create):
                keys[key.subject_id] = key
        existing = list(dict.fromkeys(s for s in subject_ids if s not in keys))
        if existing:
            self._refuse_erased(tenant, existing)
            keys.update(self._k.keystore.get_keys(tenant, existing))
        return keys

    def _refuse_erased(self, tenant: str, subject_ids: Sequence[str]) -> None:
        """A write asks the key store for tombstones every time (a read may serve a
        cached key for ``destroyed_check_seconds``): nothing is written again for a
        subject erased by another process a moment ago.

        Raises:
            KeyDestroyed: one of the subjects was crypto-shredded.
        """
        if any(self._k.keystore.existing(tenant, subject_ids).values()):
            raise KeyDestroyed("the data subject's key was destroyed (crypto-shredded)")



def load_rows(conn: Connection, tenant: str, collection: str,
              record_ids: Sequence[str]) -> dict[str, Any]:
    """The stored rows of these records of ``collection`` in ``tenant`` (others are
    left out), each with its subject's ``restricted_at``, ``jurisdiction`` and
    ``erased_at`` (its erasure marker, None if it has none)."""
    rows: dict[str, Any] = {}
    if conn.dialect.name == "postgresql":
        statement, key, size = _SELECT_ROWS_ANY, "any_ids", _ANY_CHUNK
    else:
        statement, key, size = _SELECT_ROWS, "in_ids", _IN_CHUNK
    for chunk in _chunks(record_ids, size):
        for row in conn.execute(statement, {key: list(chunk)}):
            if row.tenant == tenant and row.collection == collection:
                rows[row.id] = row
    return rows


def _check_version(row: Any, if_version: int | None) -> None:
    if if_version is not None and row.version != if_version:
        raise VersionConflict(f"record {row.id} is not at version {if_version}")


def _step_up_required(fields: frozenset[str]) -> StepUpRequired:
    return StepUpRequired(f"reading {', '.join(sorted(fields))} needs a verified second "
                          "factor (Actor.second_factor)", action="read_sensitive")


def _destroyed() -> KeyDestroyed:
    return KeyDestroyed("the data subject's key was destroyed (crypto-shredded)")


def _purpose(call: Call) -> str:
    """The purpose of a call past :meth:`RecordService._begin` (checked there)."""
    if call.purpose is None:  # pragma: no cover - _begin refuses first
        raise AssertionError("the call's purpose was not checked")
    return call.purpose

