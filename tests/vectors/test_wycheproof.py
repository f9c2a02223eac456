"""Wycheproof vectors for the primitives under Vault's crypto package.

The JSON files are read straight from ``../shared/testdata/wycheproof/`` next to
the repository (or ``VAULT_WYCHEPROOF_DIR``). If they are missing the tests
skip with the reason, unless ``VAULT_REQUIRE_VECTORS=1`` is set, in which case they fail.

Only configurations Vault actually uses are exercised where the brief narrows
them: AES-GCM with 256-bit keys, 96-bit nonces and 128-bit tags (field
envelopes). AES key wrap (RFC 3394, data keys under KEKs), HMAC-SHA256
(blind indexes, pseudonyms), HKDF-SHA256 (per-field index keys) and Ed25519
(checkpoint signatures) run every vector of their file. Each case is a test
of its own, named ``<file>-<tcId>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import pytest
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import constant_time, hashes, hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

VECTOR_DIR = Path(os.environ.get(
    "VAULT_WYCHEPROOF_DIR",
    Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "wycheproof",
))
REQUIRE_VECTORS = os.environ.get("VAULT_REQUIRE_VECTORS") == "1"

Group = dict[str, Any]
Case = dict[str, Any]
Keep = Callable[[Group], bool]


def _all(_group: Group) -> bool:
    return True


def _gcm_as_used_by_vault(group: Group) -> bool:
    return bool(group["keySize"] == 256 and group["ivSize"] == 96 and group["tagSize"] == 128)


FILES: dict[str, Keep] = {
    "aes_gcm_test.json": _gcm_as_used_by_vault,
    "aes_wrap_test.json": _all,
    "hmac_sha256_test.json": _all,
    "hkdf_sha256_test.json": _all,
    "ed25519_test.json": _all,
}


def _missing(name: str) -> NoReturn:
    reason = f"Wycheproof file {VECTOR_DIR / name} not found"
    if REQUIRE_VECTORS:
        pytest.fail(f"{reason}; VAULT_REQUIRE_VECTORS=1 demands it")
    pytest.skip(f"{reason} (vectors live in ../shared/testdata/wycheproof; "
                "set VAULT_WYCHEPROOF_DIR)")


@cache
def _load(name: str) -> dict[str, Any] | None:
    path = VECTOR_DIR / name
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _selected(name: str) -> list[tuple[Group, Case]]:
    data = _load(name)
    if data is None:
        return []
    keep = FILES[name]
    return [(group, case) for group in data["testGroups"] if keep(group)
            for case in group["tests"]]


def _params(name: str) -> list[Any]:
    """One pytest param per selected vector, or one placeholder that skips or fails."""
    prefix = name.removesuffix("_test.json")
    if _load(name) is None:
        return [pytest.param(None, None, id=f"{prefix}-missing")]
    return [pytest.param(group, case, id=f"{prefix}-{case['tcId']}")
            for group, case in _selected(name)]


def _or_refused(call: Callable[[], bytes], *refusals: type[Exception]) -> bytes | None:
    """What ``call`` returns, or None if it refuses with one of ``refusals``
    (for an "acceptable" case, where refusing is as right as the right answer)."""
    try:
        return call()
    except refusals:
        return None


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def _check_seal_and_open(case: Case, *, seal: Callable[[], bytes], unseal: Callable[[], bytes],
                         sealed: bytes, msg: bytes, refusals: tuple[type[Exception], ...],
                         seal_refusals: tuple[type[Exception], ...] | None = None) -> None:
    """A valid vector seals ``msg`` to ``sealed`` and opens back to ``msg``; an invalid
    one is refused on opening (with one of ``refusals``); an acceptable one may be
    refused, but an answer must be the right one (sealing is checked too where
    ``seal_refusals`` says how it may refuse)."""
    if case["result"] == "valid":
        assert seal() == sealed
        assert unseal() == msg
    elif case["result"] == "invalid":
        with pytest.raises(refusals):
            unseal()
    else:
        if seal_refusals is not None:
            assert _or_refused(seal, *seal_refusals) in (None, sealed)
        assert _or_refused(unseal, *refusals) in (None, msg)


# ---------------------------------------------------------------- the files themselves


@pytest.mark.parametrize("name", sorted(FILES))
def test_vector_file_is_complete_and_selection_nonempty(name: str) -> None:
    data = _load(name)
    if data is None:
        _missing(name)
    every = [case for group in data["testGroups"] for case in group["tests"]]
    # A truncated or hand-edited file would no longer match its own header.
    assert len(every) == data["numberOfTests"]
    assert len({case["tcId"] for case in every}) == len(every), "duplicate tcIds"
    selected = _selected(name)
    assert len(selected) > 0, f"no vectors of {name} match the configuration Vault uses"
    results = {case["result"] for _group, case in selected}
    # Negative vectors are the point: make sure the selection has some.
    assert {"valid", "invalid"} <= results, results


def test_gcm_selection_is_exactly_vaults_configuration() -> None:
    data = _load("aes_gcm_test.json")
    if data is None:
        _missing("aes_gcm_test.json")
    for _group, case in _selected("aes_gcm_test.json"):
        assert len(_h(case["key"])) == 32
        assert len(_h(case["iv"])) == 12
        assert len(_h(case["tag"])) == 16


def test_key_wrap_covers_256_bit_keks() -> None:
    data = _load("aes_wrap_test.json")
    if data is None:
        _missing("aes_wrap_test.json")
    kek256 = [case for group, case in _selected("aes_wrap_test.json") if group["keySize"] == 256]
    assert kek256
    assert {"valid", "invalid"} <= {case["result"] for case in kek256}


# ---------------------------------------------------------------- AES-256-GCM


@pytest.mark.parametrize(("group", "case"), _params("aes_gcm_test.json"))
def test_aes_gcm(group: Group | None, case: Case | None) -> None:
    if case is None:
        _missing("aes_gcm_test.json")
    aead = AESGCM(_h(case["key"]))
    nonce, aad, msg = _h(case["iv"]), _h(case["aad"]), _h(case["msg"])
    sealed = _h(case["ct"]) + _h(case["tag"])
    _check_seal_and_open(case, seal=lambda: aead.encrypt(nonce, msg, aad),
                         unseal=lambda: aead.decrypt(nonce, sealed, aad),
                         sealed=sealed, msg=msg, refusals=(InvalidTag,))


# ---------------------------------------------------------------- AES key wrap (RFC 3394)


@pytest.mark.parametrize(("group", "case"), _params("aes_wrap_test.json"))
def test_aes_key_wrap(group: Group | None, case: Case | None) -> None:
    if case is None:
        _missing("aes_wrap_test.json")
    kek, msg, wrapped = _h(case["key"]), _h(case["msg"]), _h(case["ct"])
    assert group is not None
    assert len(kek) * 8 == group["keySize"]
    # acceptable (8-byte keys): refusing to wrap or unwrap is fine, a wrong answer is not
    _check_seal_and_open(case, seal=lambda: aes_key_wrap(kek, msg),
                         unseal=lambda: aes_key_unwrap(kek, wrapped),
                         sealed=wrapped, msg=msg, refusals=(InvalidUnwrap, ValueError),
                         seal_refusals=(ValueError,))


# ---------------------------------------------------------------- HMAC-SHA256


@pytest.mark.parametrize(("group", "case"), _params("hmac_sha256_test.json"))
def test_hmac_sha256(group: Group | None, case: Case | None) -> None:
    if case is None:
        _missing("hmac_sha256_test.json")
    assert group is not None
    tag_bytes = group["tagSize"] // 8
    expected = _h(case["tag"])
    mac = hmac.HMAC(_h(case["key"]), hashes.SHA256())
    mac.update(_h(case["msg"]))
    if tag_bytes == 32:
        verifier = mac.copy()
        computed = mac.finalize()
        if case["result"] == "valid":
            verifier.verify(expected)
        else:
            with pytest.raises(InvalidSignature):
                verifier.verify(expected)
    else:
        computed = mac.finalize()[:tag_bytes]  # truncated tag, as the vector specifies
    matches = len(expected) == tag_bytes and constant_time.bytes_eq(computed, expected)
    assert matches is (case["result"] == "valid")


# ---------------------------------------------------------------- HKDF-SHA256


@pytest.mark.parametrize(("group", "case"), _params("hkdf_sha256_test.json"))
def test_hkdf_sha256(group: Group | None, case: Case | None) -> None:
    if case is None:
        _missing("hkdf_sha256_test.json")
    size = case["size"]
    ikm, salt, info = _h(case["ikm"]), _h(case["salt"]), _h(case["info"])

    def derive() -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=size, salt=salt, info=info).derive(ikm)

    if size > 255 * 32:
        assert case["result"] == "invalid"
        with pytest.raises(ValueError, match="larger than"):
            derive()
        return
    if case["result"] == "valid":
        okm = derive()
        assert len(okm) == size
        assert okm == _h(case["okm"])
        # An empty salt means HashLen zero bytes (RFC 5869 2.2); None must agree.
        if not salt:
            assert HKDF(algorithm=hashes.SHA256(), length=size, salt=None,
                        info=info).derive(ikm) == okm
    else:  # any other invalid vector: refuse, or at least not produce its okm
        try:
            okm = derive()
        except ValueError:
            return
        assert okm != _h(case["okm"])


# ---------------------------------------------------------------- Ed25519


@pytest.mark.parametrize(("group", "case"), _params("ed25519_test.json"))
def test_ed25519_verify(group: Group | None, case: Case | None) -> None:
    if case is None:
        _missing("ed25519_test.json")
    assert group is not None
    sig, msg = _h(case["sig"]), _h(case["msg"])
    if case["result"] == "valid":
        key = Ed25519PublicKey.from_public_bytes(_h(group["publicKey"]["pk"]))
        key.verify(sig, msg)
    else:
        with pytest.raises((InvalidSignature, ValueError)):
            Ed25519PublicKey.from_public_bytes(_h(group["publicKey"]["pk"])).verify(sig, msg)
