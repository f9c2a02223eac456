"""Matching a requester to a data subject, and verifying them, without decrypting.

A requester's identifiers (e-mail, phone...) and evidence (name, birth date,
postal address...) are normalised as the data path normalises stored values and
turned into the same keyed HMAC digests: the blind-index tokens of searchable
fields, and the verification-only digests of fields the schema marks
``verifiable`` (which ``find`` can never query). Digests are compared with
:func:`hmac.compare_digest`; the customer's data is never decrypted into the
comparison, and no value reaches a log, an error or the request log.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, and_, select

from vault._kernel import Kernel
from vault.crypto.blind_index import verification_field
from vault.errors import InvalidData
from vault.schema import CollectionSchema
from vault.store.tables import BLIND_INDEX, ERASED_SUBJECTS, RECORDS
from vault.validation import normalize_for_index

__all__ = ["Digest", "digests_of", "matching_subjects", "points_for"]


@dataclass(frozen=True, slots=True)
class Digest:
    """The keyed digest of one given value in one field of one collection."""

    collection: str
    field: str       # the blind_index ``field``: a field name or ``verify:<name>``
    name: str        # the schema field name
    digest: bytes


def _specs(kernel: Kernel, name: str, *, verifiable: bool
           ) -> list[tuple[CollectionSchema, str]]:
    """(schema, blind_index field) for every collection where ``name`` (a field name,
    or ``collection.field``) has a digest: searchable, or (with ``verifiable``)
    marked verifiable."""
    collection, _, field = name.rpartition(".")
    found = []
    for schema in kernel.rules.schemas:
        if collection and schema.name != collection:
            continue
        if field in schema.searchable_fields:
            found.append((schema, field))
        elif verifiable and field in schema.verifiable_fields:
            found.append((schema, verification_field(field)))
    return found


def digests_of(kernel: Kernel, tenant: str, values: Mapping[str, object], *,
               verifiable: bool, what: str) -> list[Digest]:
    """The digests of the given values, one per collection holding the field.

    Args:
        values: field name (or ``collection.field``) -> the value given.
        verifiable: also use verification-only digests (evidence); identifiers
            only use searchable fields.
        what: the argument's name, for errors.

    Raises:
        InvalidData: a field with no digest anywhere, or a malformed value (the
            message names the field, never the value).
    """
    if not isinstance(values, Mapping):
        raise InvalidData(f"{what} must be a mapping of field names to values", field=what)
    out: list[Digest] = []
    for name, value in values.items():
        if not isinstance(name, str):
            raise InvalidData(f"{what}: field names must be strings", field=what)
        specs = _specs(kernel, name, verifiable=verifiable)
        if not specs:
            kinds = "searchable or verifiable" if verifiable else "searchable"
            raise InvalidData(f"{what}: no collection has a {kinds} field of that name",
                              field=what)
        for schema, label in specs:
            spec = schema.fields[label.rpartition(":")[2]]
            normalized = normalize_for_index(spec, value)
            out.append(Digest(schema.name, label, spec.name,
                              kernel.indexer.digest(tenant, schema.name, label, normalized)))
    return out


def matching_subjects(conn: Connection, tenant: str, digests: Iterable[Digest]
                      ) -> dict[str, set[str]]:
    """Subjects (not erased) whose records hold each digest: digest key -> subject ids,
    where the key is ``collection.field``."""
    found: dict[str, set[str]] = {}
    for d in digests:
        rows = conn.execute(
            select(RECORDS.c.subject_id).distinct()
            .select_from(BLIND_INDEX.join(RECORDS, RECORDS.c.id == BLIND_INDEX.c.record_id)
                         .outerjoin(ERASED_SUBJECTS, and_(
                             ERASED_SUBJECTS.c.tenant == RECORDS.c.tenant,
                             ERASED_SUBJECTS.c.subject_id == RECORDS.c.subject_id)))
            .where(BLIND_INDEX.c.tenant == tenant, BLIND_INDEX.c.collection == d.collection,
                   BLIND_INDEX.c.field == d.field, BLIND_INDEX.c.digest == d.digest,
                   ERASED_SUBJECTS.c.subject_id.is_(None))
        ).scalars()
        found.setdefault(f"{d.collection}.{d.name}", set()).update(rows)
    return found


def points_for(conn: Connection, tenant: str, subject_id: str,
               evidence: Iterable[Digest]) -> set[str]:
    """The evidence fields (by schema name) that match this subject's digests.

    Every stored digest of the subject's records in that field is compared with
    the evidence's in constant time (no early exit on the first match)."""
    matched: set[str] = set()
    for d in evidence:
        stored = conn.execute(
            select(BLIND_INDEX.c.digest)
            .select_from(BLIND_INDEX.join(RECORDS, RECORDS.c.id == BLIND_INDEX.c.record_id))
            .where(RECORDS.c.tenant == tenant, RECORDS.c.subject_id == subject_id,
                   BLIND_INDEX.c.collection == d.collection, BLIND_INDEX.c.field == d.field)
        ).scalars().all()
        hit = False
        for value in stored:
            hit |= hmac.compare_digest(bytes(value), d.digest)
        if hit:
            matched.add(d.name)
    return matched
