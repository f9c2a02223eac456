"""Sealing and viewing records: plaintext encoding, encryption, blind-index rows
and the view of a record an actor may see.

Every field is its own AES-GCM envelope bound to tenant, collection, record id,
field name and subject (:mod:`vault.crypto.envelope`); a record's envelopes are
framed into one column (:mod:`vault.crypto.framing`) and sealed as a whole at
its version (the seal is checked before any field of it is decrypted).
"""

from __future__ import annotations

import functools
import itertools
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from vault._kernel import Kernel
from vault.crypto.blind_index import verification_field
from vault.crypto.envelope import FieldContext, RecordContext
from vault.crypto.framing import decode_envelopes
from vault.crypto.keystore import DataKey
from vault.crypto.masking import mask
from vault.errors import DecryptionError
from vault.schema import CollectionSchema
from vault.types import Record
from vault.validation import index_form

__all__ = ["Sealer", "Visible", "decode_value", "disclosed", "encode_value", "new_id",
           "visible_fields"]

# Ids: a random per-process prefix, a per-process sequence, then random bits (32 hex
# digits, unguessable). Ids made together sort together, so the rows written by one
# batch sit on neighbouring pages of the id-keyed b-trees instead of one page each:
# batched writes and retention sweeps touch (and, with secure_delete, rewrite) far
# fewer pages. They carry no time.
_ID_PREFIX = secrets.token_hex(4)
_ID_SEQUENCE = itertools.count(secrets.randbelow(1 << 32))


def new_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_SEQUENCE) & 0xFFFFFFFFFFFF:012x}{secrets.token_hex(6)}"


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_NO_NAMES: frozenset[str] = frozenset()

#: The requested fields that are decrypted (in request order) and the same as a set.
Visible = tuple[tuple[str, ...], frozenset[str]]


def encode_value(value: Any) -> bytes:
    """Plaintext of one field: ``s`` + UTF-8 for text (most fields), ``j`` + JSON otherwise."""
    if type(value) is str:
        return b"s" + value.encode("utf-8")
    return b"j" + _JSON.encode(value).encode("utf-8")


def decode_value(raw: bytes) -> Any:
    tag, body = raw[:1], raw[1:]
    try:
        if tag == b"s":
            return body.decode("utf-8")
        if tag == b"j":
            return json.loads(body)
    except ValueError:
        pass
    raise DecryptionError()


@functools.lru_cache(maxsize=256)
def _visible(requested: tuple[str, ...], readable: frozenset[str],
             maskable: frozenset[str]) -> tuple[str, ...]:
    return tuple(n for n in requested if n in readable or n in maskable)


def visible_fields(requested: Sequence[str], readable: frozenset[str],
                   maskable: frozenset[str]) -> Visible:
    """The requested fields that are decrypted: readable or maskable (once per read)."""
    shown = _visible(tuple(requested), readable, maskable)
    return shown, frozenset(shown)


def disclosed(records: Sequence[Record]) -> tuple[str, ...]:
    """The field names a read disclosed, masked ones as ``name~masked``."""
    names: set[str] = set()
    for record in records:
        names.update(n for n in record.data if n not in record.masked)
        names.update(f"{n}~masked" for n in record.masked)
    return tuple(sorted(names))


class Sealer:
    """Encrypts, indexes and opens the records of one vault."""

    def __init__(self, kernel: Kernel) -> None:
        self._cipher = kernel.cipher
        self._indexer = kernel.indexer

    def seal(self, key: DataKey, tenant: str, schema: CollectionSchema, record_id: str,
             subject_id: str, plaintexts: Mapping[str, bytes],
             version: int = 1) -> tuple[bytes, bytes]:
        """A record's framed envelopes (one per field) from encoded plaintexts, and
        its seal at ``version`` (1: a new record)."""
        record = RecordContext(tenant, schema.name, record_id, subject_id)
        framed = self._cipher.encrypt_framed(key, plaintexts, record)
        return framed, self._cipher.seal(key, framed, record, version)

    def reseal(self, key: DataKey, tenant: str, collection: str, record_id: str,
               subject_id: str, framed: bytes, version: int) -> bytes:
        """The seal of a record's (changed) framed envelopes at its new version."""
        return self._cipher.seal(key, framed,
                                 RecordContext(tenant, collection, record_id, subject_id),
                                 version)

    def check(self, key: DataKey, tenant: str, schema: CollectionSchema, row: Any) -> None:
        """Refuse a stored row (``id``, ``subject_id``, ``envelopes``, ``version``,
        ``seal``) that its seal does not vouch for.

        Raises:
            DecryptionError: no seal, or not this record's envelopes at this version.
        """
        self._cipher.check_seal(key, row.seal, row.envelopes,
                                RecordContext(tenant, schema.name, row.id, row.subject_id),
                                row.version)

    def encrypt_fields(
        self, key: DataKey, tenant: str, schema: CollectionSchema, record_id: str,
        subject_id: str, values: Mapping[str, Any],
    ) -> dict[str, bytes]:
        """One envelope per non-None value (for an update of some fields)."""
        record = RecordContext(tenant, schema.name, record_id, subject_id)
        return self._cipher.encrypt_fields(key, {
            name: encode_value(value) for name, value in values.items() if value is not None
        }, record)

    def digest(self, tenant: str, schema: CollectionSchema, name: str, normalized: str) -> bytes:
        return self._indexer.digest(tenant, schema.name, name, normalized)

    def index_tuples(
        self, out: list[tuple[Any, ...]], tenant: str, schema: CollectionSchema,
        record_id: str, values: Mapping[str, Any],
    ) -> None:
        """Append the blind-index rows of one record's searchable ``values`` to ``out``,
        as (tenant, collection, field, digest, record_id) tuples."""
        for name in schema.searchable_fields:
            value = values.get(name)
            if value is None:
                continue
            digest = self._indexer.digest(tenant, schema.name, name,
                                          index_form(schema.fields[name], value))
            out.append((tenant, schema.name, name, digest, record_id))
        # Verification-only digests (data-subject requests compare evidence with
        # them; find cannot query them).
        for name in schema.verifiable_fields:
            value = values.get(name)
            if not isinstance(value, str):
                continue
            label = verification_field(name)
            digest = self._indexer.digest(tenant, schema.name, label,
                                          index_form(schema.fields[name], value))
            out.append((tenant, schema.name, label, digest, record_id))

    def matches(self, key: DataKey, tenant: str, schema: CollectionSchema, row: Any,
                wanted: Mapping[str, str]) -> bool:
        """Re-check a blind-index hit on the decrypted value (truncated digests collide)."""
        self.check(key, tenant, schema, row)
        envelopes = decode_envelopes(row.envelopes)
        for name, normalized in wanted.items():
            env = envelopes.get(name)
            if env is None:
                return False
            value = decode_value(self._cipher.decrypt(key, env, FieldContext(
                tenant=tenant, collection=schema.name, record_id=row.id, field=name,
                subject_id=row.subject_id)))
            if index_form(schema.fields[name], value) != normalized:
                return False
        return True

    def view(
        self,
        key: DataKey,
        tenant: str,
        schema: CollectionSchema,
        row: Any,
        readable: frozenset[str],
        maskable: frozenset[str],
        requested: Sequence[str],
        visible: Visible | None = None,
    ) -> Record:
        """The record as the actor sees it. ``visible``: :func:`visible_fields` of
        the request, when the caller computed it once for many rows."""
        if visible is None:
            visible = visible_fields(requested, readable, maskable)
        record = RecordContext(tenant, schema.name, row.id, row.subject_id)
        envelopes, version = row.envelopes, row.version
        cipher = self._cipher
        cipher.check_seal(key, row.seal, envelopes, record, version)
        # The stored fields that are not decrypted (not requested, or not permitted).
        skipped: set[str] = set()
        plain, _ = cipher.decrypt_framed(key, envelopes, record, visible[1],
                                         skipped_out=skipped)
        if not maskable:
            # Nothing to mask: the common case (in the order requested, as below).
            try:
                data = {name: raw[1:].decode("utf-8") if raw[:1] == b"s" else decode_value(raw)
                        for name in visible[0] if (raw := plain.get(name)) is not None}
            except ValueError:
                raise DecryptionError() from None
            withheld = (_NO_NAMES if not skipped else
                        frozenset(n for n in requested if n in skipped))
            return Record(id=row.id, subject_id=row.subject_id, collection=schema.name,
                          data=data, masked=_NO_NAMES, withheld=withheld, version=version)
        data = {}
        masked: set[str] = set()
        for name in visible[0]:
            raw = plain.get(name)
            if raw is None:
                continue
            if name in readable:
                data[name] = decode_value(raw)
            else:
                data[name] = mask(schema.fields[name].mask, decode_value(raw))
                masked.add(name)
        return Record(id=row.id, subject_id=row.subject_id, collection=schema.name, data=data,
                      masked=frozenset(masked),
                      withheld=frozenset(n for n in requested if n in skipped),
                      version=version)
