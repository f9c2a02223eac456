"""LocalKeyProvider: the key file, AES key wrap of data keys, rotation and retirement."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from sqlalchemy import text

from vault.crypto.blind_index import BlindIndexer
from vault.crypto.keys import KeyProvider, LocalKeyProvider
from vault.crypto.keystore import DataKey, KeyStore
from vault.crypto.pseudonym import Pseudonymizer
from vault.errors import KeyManagementError
from vault.store.engine import make_engine

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX-only")


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "keyfile.json"


@pytest.fixture
def provider(key_path: Path) -> LocalKeyProvider:
    return LocalKeyProvider.create(key_path)


def _content(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _write_private(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def _valid_content() -> dict[str, Any]:
    def b64(n: int) -> str:
        return base64.b64encode(os.urandom(n)).decode()

    return {"format": 1, "current_kek": 1, "keks": {"1": b64(32)}, "index_root": b64(32),
            "pseudonym": b64(32), "signing": b64(32)}


# ---------------------------------------------------------------- the key file


@posix_only
def test_created_key_file_is_mode_0600_with_no_temp_files_left(key_path: Path,
                                                              provider: LocalKeyProvider) -> None:
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert [p.name for p in key_path.parent.iterdir()] == ["keyfile.json"]
    content = _content(key_path)
    assert content["format"] == 1
    assert content["current_kek"] == 1
    assert set(content["keks"]) == {"1"}
    for name in ("index_root", "pseudonym", "signing"):
        assert len(base64.b64decode(content[name])) == 32
    assert isinstance(provider, KeyProvider)


def test_create_refuses_to_overwrite(key_path: Path, provider: LocalKeyProvider) -> None:
    before = key_path.read_bytes()
    with pytest.raises(KeyManagementError, match="already exists"):
        LocalKeyProvider.create(key_path)
    assert key_path.read_bytes() == before


def test_two_created_files_have_independent_secrets(tmp_path: Path) -> None:
    a = _content(LocalKeyProvider.create(tmp_path / "a.json")._path)
    b = _content(LocalKeyProvider.create(tmp_path / "b.json")._path)
    for name in ("index_root", "pseudonym", "signing"):
        assert a[name] != b[name]
    assert a["keks"]["1"] != b["keks"]["1"]


def test_load_gives_back_the_same_secrets(key_path: Path, provider: LocalKeyProvider) -> None:
    loaded = LocalKeyProvider.load(key_path)
    assert loaded.index_root_key() == provider.index_root_key()
    assert loaded.pseudonym_key() == provider.pseudonym_key()
    assert loaded.public_key_pem() == provider.public_key_pem()
    dek = os.urandom(32)
    version, wrapped = provider.wrap(dek)
    assert loaded.unwrap(version, wrapped) == dek
    assert len({provider.index_root_key(), provider.pseudonym_key()}) == 2


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602, 0o620, 0o610, 0o601, 0o777])
def test_load_refuses_group_or_other_access(key_path: Path, provider: LocalKeyProvider,
                                            mode: int) -> None:
    key_path.chmod(mode)
    with pytest.raises(KeyManagementError, match=r"chmod 600") as info:
        LocalKeyProvider.load(key_path)
    assert str(key_path) in str(info.value)
    assert f"{mode:o}" in str(info.value)


@posix_only
@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_load_accepts_owner_only_modes(key_path: Path, provider: LocalKeyProvider,
                                       mode: int) -> None:
    key_path.chmod(mode)
    assert LocalKeyProvider.load(key_path).current_kek_version() == 1


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyManagementError, match="no key file") as info:
        LocalKeyProvider.load(tmp_path / "absent.json")
    assert "vault init" in str(info.value)


@pytest.mark.parametrize("text", ["{not json", "", "\x00\x01", '{"format": 1'])
def test_corrupt_json_is_refused(tmp_path: Path, text: str) -> None:
    path = _write_private(tmp_path / "bad.json", text)
    with pytest.raises(KeyManagementError, match="cannot be read as JSON"):
        LocalKeyProvider.load(path)


def test_non_object_json_is_refused(tmp_path: Path) -> None:
    path = _write_private(tmp_path / "list.json", "[1, 2]")
    with pytest.raises(KeyManagementError, match="not a JSON object"):
        LocalKeyProvider.load(path)


@pytest.mark.parametrize(("change", "message"), [
    ({"format": 2}, "unsupported format"),
    ({"keks": {}}, "no key-encryption keys"),
    ({"keks": {"one": base64.b64encode(bytes(32)).decode()}}, "must be integers"),
    ({"current_kek": 2}, "current_kek names no KEK"),
    ({"current_kek": "1"}, "current_kek names no KEK"),
    ({"keks": {"1": "!!not base64!!"}}, "not valid base64"),
    ({"keks": {"1": base64.b64encode(bytes(16)).decode()}}, "32 bytes"),
    ({"index_root": base64.b64encode(bytes(31)).decode()}, "index_root must be 32 bytes"),
    ({"pseudonym": None}, "pseudonym"),
    ({"signing": base64.b64encode(bytes(64)).decode()}, "signing must be 32 bytes"),
])
def test_malformed_key_files_are_refused(tmp_path: Path, change: dict[str, Any],
                                         message: str) -> None:
    content = _valid_content()
    LocalKeyProvider.load(_write_private(tmp_path / "ok.json", json.dumps(content)))
    content.update(change)
    path = _write_private(tmp_path / "bad.json", json.dumps(content))
    with pytest.raises(KeyManagementError, match=message):
        LocalKeyProvider.load(path)


# ---------------------------------------------------------------- wrap / unwrap


def test_wrap_unwrap_roundtrip_is_rfc3394_under_the_current_kek(key_path: Path,
                                                                provider: LocalKeyProvider) -> None:
    dek = os.urandom(32)
    version, wrapped = provider.wrap(dek)
    assert version == 1
    assert len(wrapped) == 40  # RFC 3394: one extra 64-bit block
    assert dek not in wrapped
    assert provider.unwrap(1, wrapped) == dek
    kek = base64.b64decode(_content(key_path)["keks"]["1"])
    assert aes_key_unwrap(kek, wrapped) == dek  # plain RFC 3394, nothing home-made
    # Deterministic: the same DEK under the same KEK wraps to the same bytes.
    assert provider.wrap(dek) == (1, wrapped)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_wrap_refuses_data_keys_that_are_not_32_bytes(provider: LocalKeyProvider,
                                                      size: int) -> None:
    with pytest.raises(KeyManagementError, match="32 bytes"):
        provider.wrap(os.urandom(size))


def test_wrap_many_wraps_each_key_under_the_kek_current_now(key_path: Path,
                                                             provider: LocalKeyProvider) -> None:
    deks = [os.urandom(32) for _ in range(3)]
    assert provider.wrap_many(deks) == [provider.wrap(dek) for dek in deks]
    # Another process rotates: the next batch is wrapped under the new KEK.
    other = LocalKeyProvider.load(key_path)
    assert other.rotate() == 2
    wrapped = provider.wrap_many(deks)
    assert [v for v, _ in wrapped] == [2, 2, 2]
    assert [provider.unwrap(v, w) for v, w in wrapped] == deks
    with pytest.raises(KeyManagementError, match="32 bytes"):
        provider.wrap_many([deks[0], os.urandom(31)])


def test_unwrap_of_tampered_wrapped_key_fails(provider: LocalKeyProvider) -> None:
    _, wrapped = provider.wrap(os.urandom(32))
    for position in range(len(wrapped)):
        damaged = bytearray(wrapped)
        damaged[position] ^= 0x01
        with pytest.raises(KeyManagementError, match="integrity check"):
            provider.unwrap(1, bytes(damaged))
    for bad in (wrapped[:-8], wrapped[:-1], wrapped + b"\x00" * 8, b"", bytes(40)):
        with pytest.raises(KeyManagementError):
            provider.unwrap(1, bad)


def test_unwrap_under_an_unknown_version_fails(provider: LocalKeyProvider) -> None:
    _, wrapped = provider.wrap(os.urandom(32))
    with pytest.raises(KeyManagementError, match="not available"):
        provider.unwrap(2, wrapped)


# ---------------------------------------------------------------- rotate / retire


def test_rotate_increments_and_persists(key_path: Path, provider: LocalKeyProvider) -> None:
    dek = os.urandom(32)
    _, wrapped_v1 = provider.wrap(dek)
    root, pseudo, pem = provider.index_root_key(), provider.pseudonym_key(), \
        provider.public_key_pem()

    assert provider.rotate() == 2
    assert provider.current_kek_version() == 2
    assert provider.kek_versions() == [1, 2]
    version, wrapped_v2 = provider.wrap(dek)
    assert version == 2
    assert wrapped_v2 != wrapped_v1
    with pytest.raises(KeyManagementError):
        provider.unwrap(1, wrapped_v2)  # the KEKs really differ

    assert provider.rotate() == 3
    reloaded = LocalKeyProvider.load(key_path)
    assert reloaded.current_kek_version() == 3
    assert reloaded.kek_versions() == [1, 2, 3]
    assert reloaded.unwrap(1, wrapped_v1) == dek
    assert reloaded.unwrap(2, wrapped_v2) == dek
    # Rotation touches only KEKs.
    assert (reloaded.index_root_key(), reloaded.pseudonym_key(),
            reloaded.public_key_pem()) == (root, pseudo, pem)
    if os.name == "posix":
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    # No temporary file is left behind; the lock file holds nothing secret.
    assert sorted(p.name for p in key_path.parent.iterdir()) == [
        "keyfile.json", "keyfile.json.lock"]
    assert (key_path.parent / "keyfile.json.lock").stat().st_size == 0


def test_retire_current_is_refused(key_path: Path, provider: LocalKeyProvider) -> None:
    with pytest.raises(KeyManagementError, match="current"):
        provider.retire(1)
    provider.rotate()
    with pytest.raises(KeyManagementError, match="current"):
        provider.retire(2)
    with pytest.raises(KeyManagementError, match="does not exist"):
        provider.retire(7)
    assert LocalKeyProvider.load(key_path).kek_versions() == [1, 2]


def test_retire_old_version_then_its_wrapped_keys_are_gone(key_path: Path,
                                                           provider: LocalKeyProvider) -> None:
    dek = os.urandom(32)
    _, wrapped_v1 = provider.wrap(dek)
    provider.rotate()
    _, wrapped_v2 = provider.wrap(dek)
    provider.retire(1)
    assert provider.kek_versions() == [2]
    with pytest.raises(KeyManagementError, match="not available"):
        provider.unwrap(1, wrapped_v1)
    assert provider.unwrap(2, wrapped_v2) == dek
    reloaded = LocalKeyProvider.load(key_path)
    assert reloaded.kek_versions() == [2]
    assert set(_content(key_path)["keks"]) == {"2"}
    with pytest.raises(KeyManagementError, match="not available"):
        reloaded.unwrap(1, wrapped_v1)
    # Versions are never reused after a retirement.
    assert reloaded.rotate() == 3


# ---------------------------------------------------------------- signing key


def test_signing_key_verifies_with_the_published_pem(key_path: Path,
                                                     provider: LocalKeyProvider) -> None:
    message = b"checkpoint 42"
    signature = provider.signing_key().sign(message)
    public = serialization.load_pem_public_key(LocalKeyProvider.load(key_path).public_key_pem())
    assert isinstance(public, Ed25519PublicKey)
    public.verify(signature, message)
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"checkpoint 43")


# ---------------------------------------------------------------- no key material in reprs


def _spellings(secret: bytes) -> list[str]:
    return [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(),
            base64.urlsafe_b64encode(secret).decode().rstrip("="), repr(secret)[2:-1],
            secret.hex()[:16]]


def test_no_key_material_in_reprs(tmp_path: Path, key_path: Path,
                                  provider: LocalKeyProvider) -> None:
    provider.rotate()
    content = _content(key_path)
    secrets = [base64.b64decode(v) for v in content["keks"].values()]
    secrets += [base64.b64decode(content[n]) for n in ("index_root", "pseudonym", "signing")]

    dek = bytes(range(100, 132))
    data_key = DataKey("acme", "subj-1", 5, 2, AESGCM(dek))
    secrets.append(dek)
    engine = make_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    store = KeyStore(engine, provider)
    store.create_schema()
    stored_key = store.create_keys("acme", ["subj-2"])[0]
    with engine.connect() as conn:
        wrapped = conn.execute(text("SELECT wrapped FROM data_keys")).scalar_one()
    secrets.append(provider.unwrap(2, wrapped))

    shown = [repr(provider), str(provider), repr(data_key), str(data_key), repr(stored_key),
             repr(store), repr(BlindIndexer(provider.index_root_key())),
             repr(Pseudonymizer(provider.pseudonym_key())), repr([data_key]),
             repr({"k": stored_key})]
    for shown_text in shown:
        for secret in secrets:
            for spelling in _spellings(secret):
                assert spelling not in shown_text, f"key material in {shown_text!r}"
    assert "secret" in repr(data_key)
    assert "secret" in repr(BlindIndexer(provider.index_root_key()))
    assert "secret" in repr(Pseudonymizer(provider.pseudonym_key()))
    engine.dispose()


# ---------------------------------------------------------------- several processes, one key file


def test_rotate_from_a_stale_provider_never_replaces_an_existing_kek(
        key_path: Path, provider: LocalKeyProvider) -> None:
    stale = LocalKeyProvider.load(key_path)  # e.g. a long-running server process
    assert provider.rotate() == 2  # e.g. `vault keys rotate` from the CLI
    dek = os.urandom(32)
    version, wrapped = provider.wrap(dek)  # the CLI rewraps data keys under KEK 2
    stale.rotate()  # later, the other process rotates too
    assert LocalKeyProvider.load(key_path).unwrap(version, wrapped) == dek


def test_a_stale_provider_unwraps_keys_wrapped_under_a_kek_another_process_created(
        key_path: Path, provider: LocalKeyProvider) -> None:
    """A server loaded before `vault keys rotate` still opens keys rewrapped by it."""
    stale = LocalKeyProvider.load(key_path)
    provider.rotate()
    dek = os.urandom(32)
    version, wrapped = provider.wrap(dek)
    assert version == 2
    assert stale.unwrap(version, wrapped) == dek


def test_a_stale_provider_wraps_under_the_kek_that_is_current_now(
        key_path: Path, provider: LocalKeyProvider) -> None:
    """New data keys never land under a KEK that another process rotated away from
    (and might retire next)."""
    stale = LocalKeyProvider.load(key_path)
    provider.rotate()
    provider.retire(1)
    version, wrapped = stale.wrap(os.urandom(32))
    assert version == 2
    assert 1 not in stale.kek_versions()
    LocalKeyProvider.load(key_path).unwrap(version, wrapped)


def test_concurrent_rotations_from_several_processes_make_distinct_versions(
        key_path: Path, provider: LocalKeyProvider) -> None:
    """Four processes rotating at once: every rotation gets its own version, none lost."""
    import subprocess
    import sys
    code = ("import sys; from vault.crypto.keys import LocalKeyProvider; "
            "p = LocalKeyProvider.load(sys.argv[1]); print(p.rotate())")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(key_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    versions = sorted(int(p.communicate(timeout=60)[0]) for p in procs)
    assert versions == [2, 3, 4, 5]
    assert LocalKeyProvider.load(key_path).kek_versions() == [1, 2, 3, 4, 5]
