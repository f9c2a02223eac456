"""The field envelope: pinned format, and every kind of tampering is one opaque error."""

from __future__ import annotations

import inspect
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.crypto.envelope import HEADER_BYTES, AESGCMFieldCipher, FieldContext, RecordContext
from vault.crypto.keystore import DataKey
from vault.errors import DecryptionError

KEY = bytes(range(32))
CTX = FieldContext("acme", "customers", "rec-1", "email", "subj-1")
CIPHER = AESGCMFieldCipher()


def data_key(material: bytes = KEY, key_id: int = 7) -> DataKey:
    return DataKey("acme", "subj-1", key_id, 1, AESGCM(material))


def test_known_answer_pins_the_on_disk_format() -> None:
    """An envelope built by hand from the documented layout opens: the format is stable."""
    nonce = bytes.fromhex("000102030405060708090a0b")
    header = struct.pack(">BBQ", 1, 1, 7) + nonce

    def lp(part: bytes) -> bytes:
        return len(part).to_bytes(4, "big") + part

    ad = header + b"".join(lp(p) for p in (b"vault/field/v1", b"acme", b"customers", b"rec-1",
                                           b"email", b"subj-1"))
    envelope = header + AESGCM(KEY).encrypt(nonce, b"sli.wei@example.cn", ad)
    assert CIPHER.decrypt(data_key(), envelope, CTX) == b"sli.wei@example.cn"
    assert envelope.hex().startswith("01010000000000000007000102030405060708090a0b")


def test_record_context_equals_field_context() -> None:
    header = b"h" * HEADER_BYTES
    bound = RecordContext("acme", "customers", "rec-1", "subj-1").field("email")
    assert bound.associated_data(header) == CTX.associated_data(header)


def test_every_flipped_byte_is_refused() -> None:
    envelope = CIPHER.encrypt(data_key(), b"secret value", CTX)
    for i in range(len(envelope)):
        damaged = bytearray(envelope)
        damaged[i] ^= 0x01
        with pytest.raises(DecryptionError) as info:
            CIPHER.decrypt(data_key(), bytes(damaged), CTX)
        assert str(info.value) == "decryption failed"


def test_truncated_extended_and_empty_envelopes_are_refused() -> None:
    envelope = CIPHER.encrypt(data_key(), b"secret value", CTX)
    for length in range(len(envelope)):
        with pytest.raises(DecryptionError):
            CIPHER.decrypt(data_key(), envelope[:length], CTX)
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(data_key(), envelope + b"\x00", CTX)


@pytest.mark.parametrize("moved", [
    FieldContext("other", "customers", "rec-1", "email", "subj-1"),
    FieldContext("acme", "leads", "rec-1", "email", "subj-1"),
    FieldContext("acme", "customers", "rec-2", "email", "subj-1"),
    FieldContext("acme", "customers", "rec-1", "phone", "subj-1"),
    FieldContext("acme", "customers", "rec-1", "email", "subj-2"),
    # length prefixes: shifting characters between parts must not collide
    FieldContext("acme", "customers", "rec-", "1email", "subj-1"),
])
def test_a_ciphertext_moved_anywhere_else_fails(moved: FieldContext) -> None:
    envelope = CIPHER.encrypt(data_key(), b"secret value", CTX)
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(data_key(), envelope, moved)


def test_wrong_key_or_key_id_fails() -> None:
    envelope = CIPHER.encrypt(data_key(), b"secret value", CTX)
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(data_key(key_id=8), envelope, CTX)
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(data_key(material=bytes(32)), envelope, CTX)


def test_nonces_are_fresh_and_not_a_parameter() -> None:
    key = data_key()
    envelopes = [CIPHER.encrypt(key, b"same", CTX) for _ in range(10_000)]
    nonces = {e[10:HEADER_BYTES] for e in envelopes}
    assert len(nonces) == len(envelopes)
    assert len(set(envelopes)) == len(envelopes)
    params = set(inspect.signature(AESGCMFieldCipher.encrypt).parameters)
    assert params == {"self", "key", "plaintext", "context"}
