"""Field encryption: AES-256-GCM in a versioned, self-describing envelope.

Envelope layout (all integers big-endian)::

    0      1      2          10        22
    | fmt  | alg  | key id   | nonce    | ciphertext + 16-byte tag |
      0x01   0x01   u64        12 bytes

The associated data is the 22-byte header followed by the length-prefixed
context: tenant, collection, record id, field name and subject id. A
ciphertext moved to another record, field, subject or tenant, or whose header
is altered, fails authentication. The nonce is drawn from the OS CSPRNG
inside :meth:`AESGCMFieldCipher.encrypt`; callers cannot supply one.

A record's envelopes are framed into one value (:mod:`vault.crypto.framing`)
and the record as a whole carries a *seal*: an AES-GCM tag (no plaintext) under
the same data key, in the same 22-byte header layout, whose associated data is
the header, the label ``vault/record-seal/v1``, tenant, collection, record id,
subject id, the record's version (u64) and the SHA-256 of the framed envelopes.
Dropping, adding, reordering or replacing any field's envelope, writing back an
older version's envelopes, or moving a seal to another record or version fails
:meth:`AESGCMFieldCipher.check_seal`. (A whole row rolled back to an older,
self-consistent copy is for the audit log to catch: it records every version.)
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag

from vault.crypto._encoding import length_prefixed
from vault.crypto.framing import FRAME_LENGTH as _FRAME_LENGTH
from vault.crypto.framing import FRAME_NAME as _FRAME_NAME
from vault.crypto.framing import iter_frames
from vault.crypto.keystore import DataKey
from vault.errors import DecryptionError

__all__ = [
    "FORMAT_VERSION", "AESGCMFieldCipher", "AssociatedData", "BoundContext", "FieldContext",
    "RecordContext",
]

FORMAT_VERSION = 1
ALG_AES256_GCM = 1
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = struct.Struct(">BBQ")
HEADER_BYTES = _HEADER.size + NONCE_BYTES
_AD_LABEL = b"vault/field/v1"
_SEAL_LABEL = b"vault/record-seal/v1"
_VERSION = struct.Struct(">Q")
SEAL_BYTES = HEADER_BYTES + TAG_BYTES


@dataclass(frozen=True, slots=True)
class FieldContext:
    """Where a ciphertext lives; bound into it as associated data."""

    tenant: str
    collection: str
    record_id: str
    field: str
    subject_id: str

    def associated_data(self, header: bytes) -> bytes:
        """header || LP(label) || LP(tenant) || LP(collection) || LP(record id)
        || LP(field) || LP(subject id), where LP is a 4-byte big-endian length
        followed by the UTF-8 bytes."""
        return b"".join((
            header, _scope(self.tenant, self.collection), _lp(self.record_id),
            _lp_name(self.field), _lp(self.subject_id),
        ))


class BoundContext:
    """The context of one field of one record, with its associated-data tail precomputed."""

    __slots__ = ("_tail",)

    def __init__(self, tail: bytes) -> None:
        self._tail = tail

    def associated_data(self, header: bytes) -> bytes:
        return header + self._tail


class RecordContext:
    """The shared part of the context of every field of one record.

    ``RecordContext(t, c, r, s).field(f).associated_data(h)`` equals
    ``FieldContext(t, c, r, f, s).associated_data(h)``; it only saves
    re-encoding the shared parts for each field of a record.
    """

    __slots__ = ("prefix", "seal_prefix", "suffix")

    def __init__(self, tenant: str, collection: str, record_id: str, subject_id: str) -> None:
        # _lp inline (this runs once per record read or written).
        rid, sid = record_id.encode("utf-8"), subject_id.encode("utf-8")
        lp_rid = len(rid).to_bytes(4, "big") + rid
        #: The encoded label, tenant, collection and record id; then the subject id.
        self.prefix = _scope(tenant, collection) + lp_rid
        self.suffix = suffix = len(sid).to_bytes(4, "big") + sid
        #: The record seal's label, tenant, collection, record id and subject id.
        self.seal_prefix = _seal_scope(tenant, collection) + lp_rid + suffix

    def seal_data(self, header: bytes, version: int, framed: bytes) -> bytes:
        """The associated data of the record's seal at ``version`` over ``framed``."""
        return (header + self.seal_prefix + _VERSION.pack(version)
                + hashlib.sha256(framed).digest())

    def field(self, name: str) -> BoundContext:
        return BoundContext(self.tail(name))

    def tail(self, name: str) -> bytes:
        """The associated data of field ``name`` after the envelope header."""
        return self.prefix + _lp_name(name) + self.suffix


class AssociatedData(Protocol):
    def associated_data(self, header: bytes) -> bytes: ...


def _lp(text: str) -> bytes:
    data = text.encode("utf-8")
    return len(data).to_bytes(4, "big") + data


@functools.lru_cache(maxsize=1024)
def _lp_name(text: str) -> bytes:
    return _lp(text)


@functools.lru_cache(maxsize=1024)
def _framed_name(raw: bytes) -> tuple[str, bytes]:
    """A field name as vault.crypto.framing frames it (UTF-8) -> the name and its
    associated-data encoding (field names are few: made once)."""
    text = raw.decode("utf-8")
    return text, _lp_name(text)


@functools.lru_cache(maxsize=1024)
def _name_out(name: str) -> tuple[bytes, bytes]:
    """A field name -> its framing (u16 length | UTF-8) and associated-data encoding."""
    raw = name.encode("utf-8")
    return _FRAME_NAME.pack(len(raw)) + raw, _lp_name(name)


@functools.lru_cache(maxsize=1024)
def _scope(tenant: str, collection: str) -> bytes:
    return length_prefixed(_AD_LABEL, tenant, collection)


@functools.lru_cache(maxsize=1024)
def _seal_scope(tenant: str, collection: str) -> bytes:
    return length_prefixed(_SEAL_LABEL, tenant, collection)


class AESGCMFieldCipher:
    """Encrypts and decrypts single field values under a subject's data key."""

    def encrypt(self, key: DataKey, plaintext: bytes, context: AssociatedData) -> bytes:
        """Encrypt one value; a fresh random 96-bit nonce is drawn for every call."""
        nonce = os.urandom(NONCE_BYTES)
        header = _HEADER.pack(FORMAT_VERSION, ALG_AES256_GCM, key.key_id) + nonce
        return header + key.aead.encrypt(nonce, plaintext, context.associated_data(header))

    def encrypt_fields(self, key: DataKey, plaintexts: Mapping[str, bytes],
                       record: RecordContext) -> dict[str, bytes]:
        """Encrypt several fields of one record, each under its own fresh random nonce.

        Equal to calling :meth:`encrypt` once per field with
        ``record.field(name)``; the nonces of the record are drawn from the OS
        CSPRNG in one call and sliced apart, which saves a system call per field.
        """
        count = len(plaintexts)
        if not count:
            return {}
        nonces = os.urandom(NONCE_BYTES * count)
        fixed = _HEADER.pack(FORMAT_VERSION, ALG_AES256_GCM, key.key_id)
        encrypt = key.aead.encrypt
        prefix, suffix = record.prefix, record.suffix
        out: dict[str, bytes] = {}
        at = 0
        for name, plaintext in plaintexts.items():
            nonce = nonces[at:at + NONCE_BYTES]
            at += NONCE_BYTES
            header = fixed + nonce
            out[name] = header + encrypt(nonce, plaintext,
                                         header + prefix + _lp_name(name) + suffix)
        return out

    def encrypt_framed(self, key: DataKey, plaintexts: Mapping[str, bytes],
                       record: RecordContext) -> bytes:
        """:meth:`encrypt_fields`, framed as :func:`vault.crypto.framing.encode_envelopes`
        frames it, in one pass: ``encode_envelopes(encrypt_fields(key, plaintexts,
        record))``, each field under its own fresh random nonce."""
        count = len(plaintexts)
        if not count:
            return b""
        nonces = os.urandom(NONCE_BYTES * count)
        fixed = _HEADER.pack(FORMAT_VERSION, ALG_AES256_GCM, key.key_id)
        encrypt = key.aead.encrypt
        prefix, suffix = record.prefix, record.suffix
        length = _FRAME_LENGTH.pack
        parts: list[bytes] = []
        append = parts.append
        at = 0
        for name, plaintext in plaintexts.items():
            nonce = nonces[at:at + NONCE_BYTES]
            at += NONCE_BYTES
            frame, lp_name = _name_out(name)
            header = fixed + nonce
            sealed = encrypt(nonce, plaintext, header + prefix + lp_name + suffix)
            append(frame)
            append(length(len(sealed) + len(header)))
            append(header)
            append(sealed)
        return b"".join(parts)

    def decrypt_fields(self, key: DataKey, envelopes: Mapping[str, bytes],
                       record: RecordContext, names: Iterable[str]) -> dict[str, bytes]:
        """Decrypt the fields ``names`` of one record that have an envelope.

        Same checks as :meth:`decrypt` for each field (the format, algorithm and
        key id are checked as the 10 header bytes they must be).

        Raises:
            DecryptionError: for every failure, with no detail.
        """
        out: dict[str, bytes] = {}
        decrypt = key.aead.decrypt
        expected = _HEADER.pack(FORMAT_VERSION, ALG_AES256_GCM, key.key_id)
        prefix, suffix = record.prefix, record.suffix
        fixed, header_bytes = _HEADER.size, HEADER_BYTES
        for name in names:
            envelope = envelopes.get(name)
            if envelope is None:
                continue
            if len(envelope) < header_bytes + TAG_BYTES or envelope[:fixed] != expected:
                raise DecryptionError()
            try:
                out[name] = decrypt(envelope[fixed:header_bytes], envelope[header_bytes:],
                                    envelope[:header_bytes] + prefix + _lp_name(name) + suffix)
            except InvalidTag:
                raise DecryptionError() from None
        return out

    def decrypt_framed(self, key: DataKey, framed: bytes, record: RecordContext,
                       names: Container[str], *,
                       skipped_out: set[str] | None = None) -> tuple[dict[str, bytes], int]:
        """:meth:`decrypt_fields` of the fields ``names`` straight from a record's
        framed envelopes (:func:`vault.crypto.framing.encode_envelopes`), in one pass.

        Equal to ``decrypt_fields(key, decode_envelopes(framed), record, names)``
        (fields in stored order), with the same refusals, and also returns how
        many fields are stored; ``skipped_out``, if given, receives the names of the
        stored fields not in ``names`` (not decrypted).

        Raises:
            DecryptionError: malformed framing (as ``decode_envelopes``), or any
                failure of :meth:`decrypt`, with no detail.
        """
        if type(framed) is not bytes:
            framed = bytes(framed)
        out: dict[str, bytes] = {}
        skipped: set[str] = set()
        decrypt = key.aead.decrypt
        expected = _HEADER.pack(FORMAT_VERSION, ALG_AES256_GCM, key.key_id)
        prefix, suffix = record.prefix, record.suffix
        fixed, header_bytes, shortest = _HEADER.size, HEADER_BYTES, HEADER_BYTES + TAG_BYTES
        try:
            for raw, pos, stop in iter_frames(framed):
                name, lp_name = _framed_name(raw)
                # A name framed twice is refused (wanted ones are in ``out`` once decrypted).
                if name in names:
                    if (name in out or stop - pos < shortest
                            or framed[pos:pos + fixed] != expected):
                        raise DecryptionError()
                    head = pos + header_bytes
                    out[name] = decrypt(framed[pos + fixed:head], framed[head:stop],
                                        framed[pos:head] + prefix + lp_name + suffix)
                elif name in skipped:
                    raise DecryptionError()
                else:
                    skipped.add(name)
        except (UnicodeDecodeError, InvalidTag):
            raise DecryptionError() from None
        if skipped_out is not None:
            skipped_out.update(skipped)
        return out, len(out) + len(skipped)

    def decrypt(self, key: DataKey, envelope: bytes, context: AssociatedData) -> bytes:
        """Decrypt one value.

        Raises:
            DecryptionError: for every failure (malformed envelope, unknown
                version, wrong key, altered bytes, wrong context), with no detail.
        """
        if len(envelope) < HEADER_BYTES + TAG_BYTES:
            raise DecryptionError()
        header = envelope[:HEADER_BYTES]
        fmt, alg, key_id = _HEADER.unpack_from(header)
        if fmt != FORMAT_VERSION or alg != ALG_AES256_GCM or key_id != key.key_id:
            raise DecryptionError()
        nonce = header[_HEADER.size:]
        try:
            return key.aead.decrypt(nonce, envelope[HEADER_BYTES:],
                                    context.associated_data(header))
        except InvalidTag:
            raise DecryptionError() from None

    def seal(self, key: DataKey, framed: bytes, record: RecordContext, version: int) -> bytes:
        """The seal of a record's framed envelopes at ``version`` (see the module
        docstring): a fresh random nonce, no plaintext, the tag over all of it."""
        nonce = os.urandom(NONCE_BYTES)
        header = _HEADER.pack(FORMAT_VERSION, ALG_AES256_GCM, key.key_id) + nonce
        return header + key.aead.encrypt(nonce, b"", record.seal_data(header, version, framed))

    def check_seal(self, key: DataKey, seal: bytes | None, framed: bytes,
                   record: RecordContext, version: int) -> None:
        """Refuse a record whose seal does not vouch for exactly these framed
        envelopes of this record at this version (or that has no seal).

        Raises:
            DecryptionError: for every failure, with no detail.
        """
        if seal is None or len(seal) != SEAL_BYTES:
            raise DecryptionError()
        if type(seal) is not bytes:
            seal = bytes(seal)
        if type(framed) is not bytes:
            framed = bytes(framed)
        header = seal[:HEADER_BYTES]
        if header[:_HEADER.size] != _HEADER.pack(FORMAT_VERSION, ALG_AES256_GCM, key.key_id):
            raise DecryptionError()
        try:
            key.aead.decrypt(header[_HEADER.size:], seal[HEADER_BYTES:],
                             record.seal_data(header, version, framed))
        except InvalidTag:
            raise DecryptionError() from None

    @staticmethod
    def key_id(envelope: bytes) -> int:
        """The data key id recorded in an envelope's header."""
        if len(envelope) < HEADER_BYTES:
            raise DecryptionError()
        return int(_HEADER.unpack_from(envelope)[2])
