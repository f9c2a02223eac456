"""Wycheproof vectors (Apache-2.0) for every primitive Vault relies on.

Read straight from ``../shared/testdata/wycheproof/``: AES-256-GCM with 96-bit
nonces and 128-bit tags (field envelopes), AES key wrap (data keys under
KEKs), HMAC-SHA256 (blind indexes, pseudonyms), HKDF-SHA256 (per-field index
keys) and Ed25519 (audit checkpoints). Each case is its own test, named by
file and tcId, so a failure points at the vector.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

VECTORS = Path(os.environ.get(
    "VAULT_WYCHEPROOF_DIR",
    Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "wycheproof",
))


def _cases(name: str, keep: Any = lambda group: True) -> list[Any]:
    path = VECTORS / name
    if not path.is_file():
        reason = f"Wycheproof vectors not found at {path} (set VAULT_WYCHEPROOF_DIR)"
        if os.environ.get("VAULT_REQUIRE_VECTORS") == "1":
            raise FileNotFoundError(reason)
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=reason))]
    data = json.loads(path.read_text())
    cases = [
        pytest.param(group, case, id=f"{name.removesuffix('_test.json')}-{case['tcId']}")
        for group in data["testGroups"] if keep(group)
        for case in group["tests"]
    ]
    assert cases, f"no usable vectors in {name}"
    return cases


def _hex(value: str) -> bytes:
    return bytes.fromhex(value)


@pytest.mark.parametrize(("group", "case"), _cases(
    "aes_gcm_test.json",
    lambda g: g["keySize"] == 256 and g["ivSize"] == 96 and g["tagSize"] == 128))
def test_aes256_gcm(group: Any, case: Any) -> None:
    aead = AESGCM(_hex(case["key"]))
    nonce, aad, msg = _hex(case["iv"]), _hex(case["aad"]), _hex(case["msg"])
    sealed = _hex(case["ct"]) + _hex(case["tag"])
    if case["result"] == "valid":
        assert aead.encrypt(nonce, msg, aad) == sealed
        assert aead.decrypt(nonce, sealed, aad) == msg
    elif case["result"] == "invalid":
        with pytest.raises(InvalidTag):
            aead.decrypt(nonce, sealed, aad)


@pytest.mark.parametrize(("group", "case"), _cases("aes_wrap_test.json"))
def test_aes_key_wrap(group: Any, case: Any) -> None:
    kek, msg, wrapped = _hex(case["key"]), _hex(case["msg"]), _hex(case["ct"])
    if case["result"] == "valid":
        assert aes_key_wrap(kek, msg) == wrapped
        assert aes_key_unwrap(kek, wrapped) == msg
    elif case["result"] == "invalid":
        with pytest.raises((InvalidUnwrap, ValueError)):
            aes_key_unwrap(kek, wrapped)


@pytest.mark.parametrize(("group", "case"), _cases("hmac_sha256_test.json"))
def test_hmac_sha256(group: Any, case: Any) -> None:
    mac = hmac.HMAC(_hex(case["key"]), hashes.SHA256())
    mac.update(_hex(case["msg"]))
    tag = mac.finalize()[: group["tagSize"] // 8]
    if case["result"] == "valid":
        assert tag == _hex(case["tag"])
    else:
        assert tag != _hex(case["tag"])


@pytest.mark.parametrize(("group", "case"), _cases("hkdf_sha256_test.json"))
def test_hkdf_sha256(group: Any, case: Any) -> None:
    def derive() -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=case["size"],
                    salt=_hex(case["salt"]) or None, info=_hex(case["info"])
                    ).derive(_hex(case["ikm"]))

    if case["result"] == "valid":
        assert derive() == _hex(case["okm"])
    else:
        with pytest.raises(ValueError, match="larger than"):
            derive()


@pytest.mark.parametrize(("group", "case"), _cases("ed25519_test.json"))
def test_ed25519_verify(group: Any, case: Any) -> None:
    key = Ed25519PublicKey.from_public_bytes(_hex(group["publicKey"]["pk"]))
    if case["result"] == "valid":
        key.verify(_hex(case["sig"]), _hex(case["msg"]))
    else:
        with pytest.raises((InvalidSignature, ValueError)):
            key.verify(_hex(case["sig"]), _hex(case["msg"]))
