"""Field envelopes: the on-disk format is pinned and every kind of tampering
ends in the same opaque ``DecryptionError("decryption failed")``."""

from __future__ import annotations

import dataclasses
import inspect
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.crypto.envelope import (
    HEADER_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    AESGCMFieldCipher,
    FieldContext,
    RecordContext,
)
from vault.crypto.framing import decode_envelopes, encode_envelopes
from vault.crypto.keys import LocalKeyProvider
from vault.crypto.keystore import DataKey, KeyStore
from vault.errors import DecryptionError
from vault.store.engine import make_engine

CIPHER = AESGCMFieldCipher()
CTX = FieldContext("acme", "customers", "rec-1", "email", "subj-1")
PLAINTEXT = b"li.wei@example.cn"

# Known-answer material (fixed key and nonce; the envelope below was produced
# with AESGCM directly from the documented layout, not by Vault).
KAT_KEY = bytes(range(32))
KAT_NONCE = bytes.fromhex("cafebabefacedbaddecaf888")
KAT_KEY_ID = 0x0102030405060708
KAT_CTX = FieldContext("acme", "kunden", "rec-42", "e-mail", "用户-7")
KAT_ENVELOPE = bytes.fromhex(
    "01010102030405060708cafebabefacedbaddecaf888"
    "e6ca8e51cf130f7e3e6a30ad1778a75c633aeaa8e4f1d86a6c989c9eed5bd5c4b6"
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    provider = LocalKeyProvider.create(tmp_path / "keyfile.json")
    engine = make_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    ks = KeyStore(engine, provider)
    ks.create_schema()
    yield ks
    engine.dispose()


@pytest.fixture
def key(store: KeyStore) -> DataKey:
    return store.create_keys("acme", ["subj-1"])[0]


def _refused(key: DataKey, envelope: bytes, context: object = CTX) -> None:
    """Decrypting must fail with exactly the opaque error, chaining nothing."""
    with pytest.raises(DecryptionError) as info:
        CIPHER.decrypt(key, envelope, context)  # type: ignore[arg-type]
    err = info.value
    assert str(err) == "decryption failed"
    assert err.message == "decryption failed"
    assert err.__cause__ is None
    assert err.__context__ is None or err.__suppress_context__


def _lp(text: str | bytes) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return len(data).to_bytes(4, "big") + data


def _documented_ad(header: bytes, ctx: FieldContext) -> bytes:
    return header + b"".join(_lp(p) for p in (
        b"vault/field/v1", ctx.tenant, ctx.collection, ctx.record_id, ctx.field, ctx.subject_id,
    ))


# ---------------------------------------------------------------- round trip and layout


def test_roundtrip_and_envelope_size(key: DataKey) -> None:
    envelope = CIPHER.encrypt(key, PLAINTEXT, CTX)
    assert len(envelope) == HEADER_BYTES + len(PLAINTEXT) + TAG_BYTES
    assert HEADER_BYTES == 22
    assert CIPHER.decrypt(key, envelope, CTX) == PLAINTEXT
    assert PLAINTEXT not in envelope
    assert CIPHER.encrypt(key, b"", CTX)  # empty values still get a tag
    assert CIPHER.decrypt(key, CIPHER.encrypt(key, b"", CTX), CTX) == b""


def test_header_carries_format_alg_and_key_id(key: DataKey) -> None:
    envelope = CIPHER.encrypt(key, PLAINTEXT, CTX)
    fmt, alg, key_id = struct.unpack(">BBQ", envelope[:10])
    assert (fmt, alg, key_id) == (1, 1, key.key_id)
    assert AESGCMFieldCipher.key_id(envelope) == key.key_id


def test_known_answer_envelope_opens() -> None:
    """A hand-built envelope (fixed key and nonce, documented layout and AD) opens:
    this pins the on-disk format, including UTF-8 byte lengths in the prefixes."""
    header = struct.pack(">BBQ", 1, 1, KAT_KEY_ID) + KAT_NONCE
    built = header + AESGCM(KAT_KEY).encrypt(KAT_NONCE, PLAINTEXT, _documented_ad(header, KAT_CTX))
    assert built == KAT_ENVELOPE
    kat_key = DataKey("acme", "用户-7", KAT_KEY_ID, 1, AESGCM(KAT_KEY))
    assert CIPHER.decrypt(kat_key, KAT_ENVELOPE, KAT_CTX) == PLAINTEXT
    bound = RecordContext("acme", "kunden", "rec-42", "用户-7").field("e-mail")
    assert CIPHER.decrypt(kat_key, KAT_ENVELOPE, bound) == PLAINTEXT
    assert AESGCMFieldCipher.key_id(KAT_ENVELOPE) == KAT_KEY_ID


def test_encrypt_output_opens_with_the_documented_construction(key: DataKey) -> None:
    """The other direction: what Vault writes is header||AESGCM(nonce, pt, documented AD)."""
    envelope = CIPHER.encrypt(key, PLAINTEXT, CTX)
    header, body = envelope[:HEADER_BYTES], envelope[HEADER_BYTES:]
    nonce = header[10:]
    assert len(nonce) == NONCE_BYTES
    assert key.aead.decrypt(nonce, body, _documented_ad(header, CTX)) == PLAINTEXT


def test_associated_data_matches_the_documented_construction() -> None:
    header = bytes(range(HEADER_BYTES))
    assert CTX.associated_data(header) == _documented_ad(header, CTX)
    assert KAT_CTX.associated_data(header) == _documented_ad(header, KAT_CTX)
    bound = RecordContext("acme", "customers", "rec-1", "subj-1").field("email")
    assert bound.associated_data(header) == CTX.associated_data(header)


# ---------------------------------------------------------------- tampering


def test_every_byte_flipped_is_refused(key: DataKey) -> None:
    envelope = CIPHER.encrypt(key, PLAINTEXT, CTX)
    for position in range(len(envelope)):
        damaged = bytearray(envelope)
        damaged[position] ^= 0x01
        _refused(key, bytes(damaged))
    assert CIPHER.decrypt(key, envelope, CTX) == PLAINTEXT  # the original still opens


def test_every_truncation_is_refused(key: DataKey) -> None:
    envelope = CIPHER.encrypt(key, PLAINTEXT, CTX)
    for length in range(len(envelope)):
        _refused(key, envelope[:length])


@pytest.mark.parametrize("extra", [b"\x00", b"\x01" * 16, b"x" * 100])
def test_appended_bytes_are_refused(key: DataKey, extra: bytes) -> None:
    _refused(key, CIPHER.encrypt(key, PLAINTEXT, CTX) + extra)


def test_empty_envelope_is_refused(key: DataKey) -> None:
    _refused(key, b"")


def test_header_only_and_header_plus_tag_of_nothing_are_refused(key: DataKey) -> None:
    envelope = CIPHER.encrypt(key, PLAINTEXT, CTX)
    _refused(key, envelope[:HEADER_BYTES])
    _refused(key, envelope[:HEADER_BYTES] + envelope[-TAG_BYTES:])


def test_unknown_format_or_algorithm_is_refused_even_if_authenticated(key: DataKey) -> None:
    """A correctly sealed envelope with another format/alg byte is still refused."""
    for fmt, alg in ((2, 1), (1, 2), (0, 0)):
        nonce = bytes(NONCE_BYTES)
        header = struct.pack(">BBQ", fmt, alg, key.key_id) + nonce
        envelope = header + key.aead.encrypt(nonce, PLAINTEXT, CTX.associated_data(header))
        _refused(key, envelope)


@pytest.mark.parametrize("which", ["tenant", "collection", "record_id", "field", "subject_id"])
def test_changing_any_context_field_is_refused(key: DataKey, which: str) -> None:
    envelope = CIPHER.encrypt(key, PLAINTEXT, CTX)
    original = getattr(CTX, which)
    for changed in (original + "x", original[:-1], original.upper(), ""):
        _refused(key, envelope, dataclasses.replace(CTX, **{which: changed}))


def test_shifting_characters_between_context_fields_is_refused(key: DataKey) -> None:
    """Length prefixes make ("rec-1", "email") and ("rec-", "1email") different AD."""
    envelope = CIPHER.encrypt(key, PLAINTEXT, CTX)
    _refused(key, envelope, FieldContext("acme", "customers", "rec-", "1email", "subj-1"))
    _refused(key, envelope, FieldContext("acmecustomers", "", "rec-1", "email", "subj-1"))


def test_key_with_a_different_key_id_is_refused(store: KeyStore, key: DataKey) -> None:
    envelope = CIPHER.encrypt(key, PLAINTEXT, CTX)
    other = store.create_keys("acme", ["subj-2"])[0]
    assert other.key_id != key.key_id
    _refused(other, envelope)
    # Same AES material under another id: refused on the header, before any AEAD.
    _refused(dataclasses.replace(key, key_id=key.key_id + 1), envelope)


def test_different_key_material_with_the_same_key_id_is_refused(key: DataKey) -> None:
    envelope = CIPHER.encrypt(key, PLAINTEXT, CTX)
    impostor = DataKey(key.tenant, key.subject_id, key.key_id, key.kek_version,
                       aead=AESGCM(AESGCM.generate_key(bit_length=256)))
    _refused(impostor, envelope)


def test_swapping_envelopes_between_fields_of_one_record_is_refused(key: DataKey) -> None:
    record = RecordContext("acme", "customers", "rec-1", "subj-1")
    email = CIPHER.encrypt(key, b"a@b.c", record.field("email"))
    phone = CIPHER.encrypt(key, b"+8613812348000", record.field("phone"))
    _refused(key, email, record.field("phone"))
    _refused(key, phone, record.field("email"))
    assert CIPHER.decrypt(key, email, record.field("email")) == b"a@b.c"


# ---------------------------------------------------------------- nonces


def test_same_plaintext_encrypts_differently(key: DataKey) -> None:
    first = CIPHER.encrypt(key, PLAINTEXT, CTX)
    second = CIPHER.encrypt(key, PLAINTEXT, CTX)
    assert first != second
    assert first[10:HEADER_BYTES] != second[10:HEADER_BYTES]
    assert first[:10] == second[:10]  # same key, same header prefix


def test_nonces_are_unique_over_ten_thousand_encryptions(key: DataKey) -> None:
    count = 10_000
    nonces = {CIPHER.encrypt(key, b"same", CTX)[10:HEADER_BYTES] for _ in range(count)}
    assert len(nonces) == count
    assert all(len(n) == NONCE_BYTES for n in nonces)


def test_encrypt_does_not_accept_a_nonce() -> None:
    params = inspect.signature(AESGCMFieldCipher.encrypt).parameters
    assert list(params) == ["self", "key", "plaintext", "context"]
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values())
    with pytest.raises(TypeError):
        CIPHER.encrypt(DataKey("t", "s", 1, 1, AESGCM(KAT_KEY)), b"x", CTX,
                       nonce=KAT_NONCE)  # type: ignore[call-arg]


# ---------------------------------------------------------------- the fused read of a record

FIELDS = {"email": b"sli.wei@example.cn", "phone": b"s+8613812348000", "notes": b"j[1,2]",
          "name": b"s\xe6\x9d\x8e"}
RECORD = RecordContext("acme", "customers", "rec-1", "subj-1")


def _framed(key: DataKey) -> bytes:
    return encode_envelopes(CIPHER.encrypt_fields(key, FIELDS, RECORD))


def _reference(key: DataKey, framed: bytes, names: frozenset[str]) -> object:
    """What decode_envelopes + decrypt_fields give (or the error's type)."""
    try:
        envelopes = decode_envelopes(framed)
        return CIPHER.decrypt_fields(key, envelopes, RECORD, names), len(envelopes)
    except DecryptionError:
        return DecryptionError


def _fused(key: DataKey, framed: bytes, names: frozenset[str]) -> object:
    try:
        return CIPHER.decrypt_framed(key, framed, RECORD, names)
    except DecryptionError as exc:
        error = exc
    # The same opaque error as every other refusal, chaining nothing.
    assert (str(error), error.__cause__) == ("decryption failed", None)
    return DecryptionError


@pytest.mark.parametrize("names", [frozenset(FIELDS), frozenset({"email"}), frozenset(),
                                   frozenset({"phone", "name", "absent"})])
def test_decrypt_framed_equals_decode_then_decrypt(key: DataKey, names: frozenset[str]) -> None:
    framed = _framed(key)
    plain, stored = CIPHER.decrypt_framed(key, framed, RECORD, names)
    assert stored == len(FIELDS)
    assert plain == {n: v for n, v in FIELDS.items() if n in names}
    assert (plain, stored) == _reference(key, framed, names)


@pytest.mark.parametrize("names", [frozenset(FIELDS), frozenset({"phone"})])
def test_decrypt_framed_refuses_what_decode_then_decrypt_refuses(
        key: DataKey, names: frozenset[str]) -> None:
    """Every flipped byte, truncation and extension of a framed record: the fused
    read gives exactly the reference's result, refusals included."""
    framed = _framed(key)
    variants = [framed[:cut] for cut in range(len(framed))]
    variants += [framed + extra for extra in (b"\x00", b"\x00\x01x", b"\x00\x00\x00\x00\x00\x00")]
    for at in range(len(framed)):
        variants.append(framed[:at] + bytes([framed[at] ^ 0x01]) + framed[at + 1:])
    refused = 0
    for variant in variants:
        expected = _reference(key, variant, names)
        assert _fused(key, variant, names) == expected
        refused += expected is DecryptionError
    assert refused > len(framed)  # the comparison covered refusals, not only successes


def test_decrypt_framed_refuses_a_repeated_field(key: DataKey) -> None:
    envelopes = CIPHER.encrypt_fields(key, {"email": FIELDS["email"]}, RECORD)
    once = encode_envelopes(envelopes)
    assert _fused(key, once + once, frozenset({"email"})) is DecryptionError
    assert _fused(key, once + once, frozenset()) is DecryptionError


def test_decrypt_framed_refuses_another_subjects_key(store: KeyStore, key: DataKey) -> None:
    other = store.create_keys("acme", ["subj-2"])[0]
    assert _fused(other, _framed(key), frozenset(FIELDS)) is DecryptionError
    assert _fused(key, _framed(key), frozenset(FIELDS)) != DecryptionError
    moved = RecordContext("acme", "customers", "rec-2", "subj-1")
    with pytest.raises(DecryptionError):
        CIPHER.decrypt_framed(key, _framed(key), moved, frozenset({"email"}))


def test_encrypt_framed_is_encode_envelopes_of_encrypt_fields(key: DataKey) -> None:
    """Same framing, same envelopes (each opens with decrypt under its field's
    context, in the documented construction), and fresh nonces per field and call."""
    framed = CIPHER.encrypt_framed(key, FIELDS, RECORD)
    envelopes = decode_envelopes(framed)
    assert list(envelopes) == list(FIELDS)
    assert encode_envelopes(envelopes) == framed
    for name, envelope in envelopes.items():
        assert CIPHER.decrypt(key, envelope, RECORD.field(name)) == FIELDS[name]
        ctx = FieldContext("acme", "customers", "rec-1", name, "subj-1")
        header = envelope[:HEADER_BYTES]
        assert envelope[:10] == struct.pack(">BBQ", 1, 1, key.key_id)
        assert _documented_ad(header, ctx) == header + RECORD.tail(name)
    again = decode_envelopes(CIPHER.encrypt_framed(key, FIELDS, RECORD))
    nonces = [e[10:HEADER_BYTES] for e in [*envelopes.values(), *again.values()]]
    assert len(set(nonces)) == len(nonces)
    assert CIPHER.encrypt_framed(key, {}, RECORD) == b""
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(key, envelopes["email"], RECORD.field("phone"))
