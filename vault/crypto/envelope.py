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
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from vault.crypto._encoding import length_prefixed
from vault.crypto.keystore import DataKey
from vault.errors import DecryptionError

__all__ = ["FORMAT_VERSION", "AESGCMFieldCipher", "FieldContext"]

FORMAT_VERSION = 1
ALG_AES256_GCM = 1
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = struct.Struct(">BBQ")
HEADER_BYTES = _HEADER.size + NONCE_BYTES
_AD_LABEL = b"vault/field/v1"


@dataclass(frozen=True, slots=True)
class FieldContext:
    """Where a ciphertext lives; bound into it as associated data."""

    tenant: str
    collection: str
    record_id: str
    field: str
    subject_id: str

    def associated_data(self, header: bytes) -> bytes:
        return header + length_prefixed(
            _AD_LABEL, self.tenant, self.collection, self.record_id, self.field,
            self.subject_id,
        )


class AESGCMFieldCipher:
    """Encrypts and decrypts single field values under a subject's data key."""

    def encrypt(self, key: DataKey, plaintext: bytes, context: FieldContext) -> bytes:
        """Encrypt one value; a fresh random 96-bit nonce is drawn for every call."""
        nonce = os.urandom(NONCE_BYTES)
        header = _HEADER.pack(FORMAT_VERSION, ALG_AES256_GCM, key.key_id) + nonce
        return header + key.aead.encrypt(nonce, plaintext, context.associated_data(header))

    def decrypt(self, key: DataKey, envelope: bytes, context: FieldContext) -> bytes:
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

    @staticmethod
    def key_id(envelope: bytes) -> int:
        """The data key id recorded in an envelope's header."""
        if len(envelope) < HEADER_BYTES:
            raise DecryptionError()
        return int(_HEADER.unpack_from(envelope)[2])
