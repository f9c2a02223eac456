"""Key file, key store, blind indexes, pseudonyms and masks."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import text

from vault.clock import FixedClock
from vault.crypto.blind_index import BlindIndexer
from vault.crypto.envelope import AESGCMFieldCipher, FieldContext
from vault.crypto.keys import LocalKeyProvider
from vault.crypto.keystore import KeyStore
from vault.crypto.masking import MaskStyle, mask
from vault.crypto.pseudonym import Pseudonymizer
from vault.errors import ConfigError, KeyDestroyed, KeyManagementError, NotFound
from vault.store.engine import make_engine


@pytest.fixture
def provider(tmp_path: Path) -> LocalKeyProvider:
    return LocalKeyProvider.create(tmp_path / "keyfile.json")


@pytest.fixture
def store(tmp_path: Path, provider: LocalKeyProvider) -> KeyStore:
    ks = KeyStore(make_engine(f"sqlite:///{tmp_path / 'keys.db'}"), provider)
    ks.create_schema()
    return ks


# ------------------------------------------------------------------ key file


def test_key_file_is_private_and_unsafe_modes_are_refused(tmp_path: Path,
                                                          provider: LocalKeyProvider) -> None:
    path = tmp_path / "keyfile.json"
    assert path.stat().st_mode & 0o777 == 0o600
    LocalKeyProvider.load(path)
    for mode in (0o640, 0o604, 0o660):
        os.chmod(path, mode)
        with pytest.raises(KeyManagementError, match="chmod 600"):
            LocalKeyProvider.load(path)
    os.chmod(path, 0o600)
    with pytest.raises(KeyManagementError, match="already exists"):
        LocalKeyProvider.create(path)


def test_missing_and_corrupt_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyManagementError, match="no key file"):
        LocalKeyProvider.load(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    bad.chmod(0o600)
    with pytest.raises(KeyManagementError):
        LocalKeyProvider.load(bad)
    bad.write_text(json.dumps({"format": 1, "current_kek": 1, "keks": {"1": "AAAA"}}))
    with pytest.raises(KeyManagementError, match="32 bytes"):
        LocalKeyProvider.load(bad)


def test_wrap_rotate_retire(tmp_path: Path, provider: LocalKeyProvider) -> None:
    dek = os.urandom(32)
    v1, wrapped1 = provider.wrap(dek)
    assert (v1, provider.unwrap(v1, wrapped1)) == (1, dek)
    tampered = bytes([wrapped1[0] ^ 1]) + wrapped1[1:]
    with pytest.raises(KeyManagementError):
        provider.unwrap(1, tampered)
    assert provider.rotate() == 2
    reloaded = LocalKeyProvider.load(tmp_path / "keyfile.json")
    assert reloaded.current_kek_version() == 2
    assert reloaded.kek_versions() == [1, 2]
    assert reloaded.unwrap(1, wrapped1) == dek
    with pytest.raises(KeyManagementError, match="current"):
        reloaded.retire(2)
    reloaded.retire(1)
    with pytest.raises(KeyManagementError, match="not available"):
        LocalKeyProvider.load(tmp_path / "keyfile.json").unwrap(1, wrapped1)


def test_no_key_material_in_reprs(tmp_path: Path, provider: LocalKeyProvider,
                                  store: KeyStore) -> None:
    content = json.loads((tmp_path / "keyfile.json").read_text())
    secrets_b64 = [content["index_root"], content["pseudonym"], content["signing"],
                   *content["keks"].values()]
    key = store.create_keys("acme", ["s1"])[0]
    texts = [repr(provider), repr(store), repr(key), repr(BlindIndexer(os.urandom(32))),
             repr(Pseudonymizer(os.urandom(32)))]
    for shown in texts:
        for secret in secrets_b64:
            assert secret not in shown
    assert "secret" in repr(key)


# ------------------------------------------------------------------ key store


def test_keys_are_created_once_even_under_concurrency(store: KeyStore) -> None:
    made: list[int] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        barrier.wait()
        made.append(store.create_keys("acme", ["shared"])[0].key_id)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 1
    store.clear_cache()
    assert store.get_key("acme", "shared").key_id == made[0]
    with pytest.raises(NotFound):
        store.get_key("acme", "nobody")
    with pytest.raises(NotFound):
        store.get_key("other-tenant", "shared")


def test_destroy_is_final_for_every_instance(tmp_path: Path, provider: LocalKeyProvider,
                                             store: KeyStore) -> None:
    key = store.create_keys("acme", ["s1", "s2"])[0]
    envelope = AESGCMFieldCipher().encrypt(key, b"x", FieldContext("acme", "c", "r", "f", "s1"))
    assert store.destroy("acme", "s1") is True
    assert store.destroy("acme", "s1") is False
    with pytest.raises(KeyDestroyed):
        store.get_key("acme", "s1")
    other = KeyStore(make_engine(f"sqlite:///{tmp_path / 'keys.db'}"), provider)
    with pytest.raises(KeyDestroyed):
        other.get_key("acme", "s1")
    assert other.get_key("acme", "s2").subject_id == "s2"
    with store.engine.connect() as conn:
        wrapped = conn.execute(text(
            "SELECT wrapped FROM data_keys WHERE subject_id = 's1'")).scalar_one()
    assert wrapped is None
    assert envelope  # the ciphertext exists, but nothing can open it any more
    store.destroy("acme", "never-seen")
    with pytest.raises(KeyDestroyed):
        store.create_keys("acme", ["never-seen"])


def test_rewrap_moves_every_key_and_resumes_after_a_crash(provider: LocalKeyProvider,
                                                          store: KeyStore) -> None:
    keys = store.create_keys("acme", [f"s{n}" for n in range(50)])
    before = {k.subject_id: k for k in keys}
    ctx = FieldContext("acme", "c", "r", "f", "s0")
    envelope = AESGCMFieldCipher().encrypt(before["s0"], b"kept", ctx)
    provider.rotate()
    real_wrap = provider.wrap
    calls = {"n": 0}

    real_many = provider.wrap_many

    def failing_wrap(dek: bytes, **_: object) -> tuple[int, bytes]:
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("crash in the middle of a rewrap")
        return real_wrap(dek)

    def failing_many(deks: list[bytes], **_: object) -> list[tuple[int, bytes]]:
        return [failing_wrap(dek) for dek in deks]  # a batch is wrapped with wrap_many

    provider.wrap = failing_wrap  # type: ignore[method-assign,assignment]
    provider.wrap_many = failing_many  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        store.rewrap(batch_size=10)
    provider.wrap = real_wrap  # type: ignore[method-assign]
    provider.wrap_many = real_many  # type: ignore[method-assign]
    assert store.count_by_kek_version() == {2: 20, 1: 30}
    with pytest.raises(KeyManagementError, match="still wraps 30"):
        store.retire(1)
    assert store.rewrap(batch_size=10) == 30
    assert store.count_by_kek_version() == {2: 50}
    store.retire(1)
    store.clear_cache()
    assert AESGCMFieldCipher().decrypt(store.get_key("acme", "s0"), envelope, ctx) == b"kept"


def test_cache_is_bounded_and_expires(tmp_path: Path, provider: LocalKeyProvider) -> None:
    clock = FixedClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    engine = make_engine(f"sqlite:///{tmp_path / 'k.db'}")
    store = KeyStore(engine, provider, cache_size=2, cache_ttl=60, clock=clock)
    store.create_schema()
    store.create_keys("acme", ["a", "b", "c"])  # "a" is evicted by "c"
    with engine.begin() as conn:  # destroy behind the cache's back
        conn.execute(text("UPDATE data_keys SET wrapped = NULL"))
    assert store.get_key("acme", "c").subject_id == "c"  # still cached
    with pytest.raises(KeyDestroyed):
        store.get_key("acme", "a")  # evicted: read from the store
    clock.advance(dt.timedelta(seconds=61))
    with pytest.raises(KeyDestroyed):
        store.get_key("acme", "c")  # expired: another process's destruction is honoured


# ------------------------------------------------------------------ blind index, pseudonyms


def test_blind_index_keys_are_hkdf_derived_per_field() -> None:
    root = bytes(range(32))
    indexer = BlindIndexer(root)

    def lp(part: str) -> bytes:
        return len(part.encode()).to_bytes(4, "big") + part.encode()

    expected_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                        info=b"vault/blind-index/v1" + lp("acme") + lp("customers") + lp("email"),
                        ).derive(root)
    assert indexer.field_key("acme", "customers", "email") == expected_key
    mac = hmac.HMAC(expected_key, hashes.SHA256())
    mac.update(b"li.wei@example.cn")
    assert indexer.digest("acme", "customers", "email", "li.wei@example.cn") == mac.finalize()
    digests = {
        indexer.digest(t, c, f, "same")
        for t, c, f in [("acme", "customers", "email"), ("beta", "customers", "email"),
                        ("acme", "leads", "email"), ("acme", "customers", "phone")]
    }
    assert len(digests) == 4
    assert len(BlindIndexer(root, truncate_to=8).digest("a", "b", "c", "x")) == 8
    for bad in (7, 33):
        with pytest.raises(ConfigError):
            BlindIndexer(root, truncate_to=bad)


def test_pseudonyms_are_stable_keyed_and_per_tenant() -> None:
    p = Pseudonymizer(bytes(32))
    first = p.pseudonym("acme", "subject-1")
    assert first == p.pseudonym("acme", "subject-1")
    assert len(first) == 32
    int(first, 16)
    assert first != p.pseudonym("beta", "subject-1")
    assert first != Pseudonymizer(bytes([1]) * 32).pseudonym("acme", "subject-1")


def test_pseudonym_and_blind_index_are_the_documented_hmacs_on_every_call() -> None:
    """Computed on copies of one keyed HMAC: each call is a fresh MAC of its input."""
    key = bytes(range(32))
    p = Pseudonymizer(key)

    def lp(part: str) -> bytes:
        return len(part.encode()).to_bytes(4, "big") + part.encode()

    for n in range(3):
        mac = hmac.HMAC(key, hashes.SHA256())
        mac.update(lp("vault/pseudonym/v1") + lp("acme") + lp(f"subject-{n}"))
        assert p.pseudonym("acme", f"subject-{n}") == mac.finalize()[:16].hex()
    indexer = BlindIndexer(key, truncate_to=16)
    field_key = indexer.field_key("acme", "customers", "email")
    for value in ("a@example.com", "b@example.com", "a@example.com"):
        mac = hmac.HMAC(field_key, hashes.SHA256())
        mac.update(value.encode())
        assert indexer.digest("acme", "customers", "email", value) == mac.finalize()[:16]


# ------------------------------------------------------------------ masks


@pytest.mark.parametrize(("style", "value", "shown"), [
    (MaskStyle.PHONE, "+8613812348000", "+86 138****8000"),
    (MaskStyle.EMAIL, "li.wei@example.cn", "l***@example.cn"),
    (MaskStyle.LAST4, "110101199003077777", "****7777"),
    (MaskStyle.FULL, "anything", "****"),
    (MaskStyle.INITIALS, "Anna Maria Schmidt", "A. M. S."),
    (MaskStyle.INITIALS, "李秀英", "李**"),
    (MaskStyle.YEAR, "1990-03-07", "1990-**-**"),
    (MaskStyle.PARTIAL, "Jonathan", "J****n"),
    (MaskStyle.EMAIL, {"not": "text"}, "****"),
    (MaskStyle.LAST4, "12", "****"),
])
def test_masks(style: MaskStyle, value: object, shown: str) -> None:
    assert mask(style, value) == shown
    if isinstance(value, str) and len(value) > 4:
        assert value not in shown


def test_mask_none_style_passes_values_through() -> None:
    assert mask(MaskStyle.NONE, "DE") == "DE"
    assert mask("email", None) is None
